package io.kvtier.store;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import java.util.ResourceBundle;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;

class ErrorTallyTest {
  /** A System.Logger that keeps what it is given. */
  static final class CapturingLogger implements System.Logger {
    final List<String> lines = new CopyOnWriteArrayList<>();

    @Override
    public String getName() {
      return "capture";
    }

    @Override
    public boolean isLoggable(Level level) {
      return true;
    }

    @Override
    public void log(Level level, ResourceBundle bundle, String msg, Throwable thrown) {
      lines.add(level + " " + msg);
    }

    @Override
    public void log(Level level, ResourceBundle bundle, String format, Object... params) {
      lines.add(level + " " + format);
    }

    @Override
    public void log(Level level, Supplier<String> msgSupplier) {
      lines.add(level + " " + msgSupplier.get());
    }
  }

  @Test
  void record_logsFirstOfEachKindOnly_andCountsAll() {
    CapturingLogger log = new CapturingLogger();
    ErrorTally t = new ErrorTally(log, "disk tier");
    for (int i = 0; i < 1000; i++) {
      t.record("disk full", "writing chunk " + i, new java.io.IOException("No space left"));
    }
    t.record("read-only", "x", null);
    assertEquals(2, log.lines.size(), log.lines.toString());
    assertTrue(log.lines.get(0).contains("disk tier: disk full: writing chunk 0"));
    assertTrue(log.lines.get(0).contains("counted, not logged"));
    assertEquals(Map.of("disk full", 1000L, "read-only", 1L), t.counts());
    assertEquals(0, t.count("never"));
  }
}
