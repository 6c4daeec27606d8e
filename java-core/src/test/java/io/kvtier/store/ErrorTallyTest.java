package io.kvtier.store;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.ResourceBundle;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicIntegerArray;
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
      String trace = "";
      if (thrown != null) {
        java.io.StringWriter w = new java.io.StringWriter();
        thrown.printStackTrace(new java.io.PrintWriter(w));
        trace = "\n" + w;
      }
      lines.add(level + " " + msg + trace);
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
      t.record(ErrorKind.DISK_FULL, "writing chunk " + i, new java.io.IOException("No space left"));
    }
    t.record(ErrorKind.READ_ONLY, "x", null);
    assertEquals(2, log.lines.size(), log.lines.toString());
    assertTrue(log.lines.get(0).contains("disk tier: disk full: writing chunk 0"));
    assertTrue(log.lines.get(0).contains("counted, not logged"));
    assertEquals(Map.of(ErrorKind.DISK_FULL, 1000L, ErrorKind.READ_ONLY, 1L), t.counts());
    assertEquals(0, t.count(ErrorKind.TIMEOUT));
  }

  @Test
  void record_detailOrErrorQuotingASecret_logsItMasked() {
    CapturingLogger log = new CapturingLogger();
    String url = "redis://user:hunter2@127.0.0.1:6399";
    ErrorTally t = new ErrorTally(log, "remote tier", url);
    t.record(
        ErrorKind.UNAVAILABLE,
        "cannot connect to " + url,
        new IllegalStateException(
            "handshake failed", new IllegalArgumentException("AUTH hunter2 rejected")));
    assertEquals(1, log.lines.size());
    String line = log.lines.get(0);
    assertFalse(line.contains("hunter2"), line);
    assertTrue(line.contains("cannot connect to redis://user:***@127.0.0.1:6399"), line);
    assertTrue(
        line.contains("Caused by: java.lang.IllegalArgumentException: AUTH *** rejected"), line);
  }

  /** A System.Logger that counts the lines it is given, by the kind each names. */
  static final class CountingLogger implements System.Logger {
    final AtomicIntegerArray linesByKind = new AtomicIntegerArray(KINDS);

    @Override
    public String getName() {
      return "count";
    }

    @Override
    public boolean isLoggable(Level level) {
      return true;
    }

    @Override
    public void log(Level level, ResourceBundle bundle, String msg, Throwable thrown) {
      for (int k = 0; k < KINDS; k++) {
        if (msg.startsWith("tier: " + KIND[k] + ":")) {
          linesByKind.incrementAndGet(k);
        }
      }
    }

    @Override
    public void log(Level level, ResourceBundle bundle, String format, Object... params) {
      log(level, bundle, format, (Throwable) null);
    }
  }

  /**
   * {@link #ROUNDS} rounds; in each, {@link #threads()} threads meet at a spinning barrier (so they
   * leave it within nanoseconds of each other, where a parking latch wakes them one by one) and
   * then each records one error of each of {@link #KINDS} kinds, in the same order, on the round's
   * fresh tally. Every kind must be logged exactly once per round. Counting and then deciding
   * "first" from the count loses the line when two threads count before either reads.
   */
  @Test
  void record_firstOfKindFromManyThreadsAtOnce_logsExactlyOncePerKind() throws Exception {
    int threads = threads();
    CountingLogger[] logs = new CountingLogger[ROUNDS];
    ErrorTally[] tallies = new ErrorTally[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
      logs[r] = new CountingLogger();
      tallies[r] = new ErrorTally(logs[r], "tier");
    }
    AtomicInteger arrived = new AtomicInteger();
    AtomicBoolean abort = new AtomicBoolean();
    ExecutorService pool = Executors.newFixedThreadPool(threads);
    try {
      List<Future<?>> done = new ArrayList<>();
      for (int t = 0; t < threads; t++) {
        done.add(
            pool.submit(
                () -> {
                  for (int r = 0; r < ROUNDS; r++) {
                    int target = (r + 1) * threads;
                    arrived.incrementAndGet();
                    for (int spins = 0; arrived.get() < target; spins++) {
                      if (abort.get()) {
                        return null;
                      }
                      if (spins < 10_000) {
                        Thread.onSpinWait();
                      } else {
                        Thread.yield(); // a peer is descheduled: let it run
                      }
                    }
                    for (int k = 0; k < KINDS; k++) {
                      tallies[r].record(KIND[k], "detail", null);
                    }
                  }
                  return null;
                }));
      }
      for (Future<?> f : done) {
        try {
          f.get(120, TimeUnit.SECONDS);
        } catch (ExecutionException | TimeoutException e) {
          abort.set(true); // a thread that failed must not leave the others spinning
          throw e;
        }
      }
    } finally {
      pool.shutdownNow();
    }
    int wrongRounds = 0;
    String first = null;
    for (int r = 0; r < ROUNDS; r++) {
      for (int k = 0; k < KINDS; k++) {
        int lines = logs[r].linesByKind.get(k);
        assertEquals(threads, tallies[r].count(KIND[k]), "every error is counted");
        if (lines != 1) {
          wrongRounds++;
          if (first == null) {
            first = "round " + r + ": '" + KIND[k] + "' logged " + lines + " times";
          }
        }
      }
    }
    assertEquals(
        0,
        wrongRounds,
        "kinds not logged exactly once, out of " + ROUNDS * KINDS + "; first: " + first);
  }

  /** Threads per round: enough to run in parallel on this machine, at least 2, at most 16. */
  private static int threads() {
    return Math.clamp(Runtime.getRuntime().availableProcessors(), 2, 16);
  }

  /** Kinds each thread records per round. */
  private static final int KINDS = 8;

  private static final ErrorKind[] KIND = java.util.Arrays.copyOf(ErrorKind.values(), KINDS);

  /** Rounds, each on a fresh tally. */
  private static final int ROUNDS = 10_000;
}
