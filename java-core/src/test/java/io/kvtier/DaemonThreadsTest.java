package io.kvtier;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.ThreadFactory;
import org.junit.jupiter.api.Test;

class DaemonThreadsTest {
  @Test
  void numbered_namesThreadsInOrder_asDaemons() {
    ThreadFactory f = DaemonThreads.numbered("kvtier-test-");
    Thread a = f.newThread(() -> {});
    Thread b = f.newThread(() -> {});
    assertEquals("kvtier-test-0", a.getName());
    assertEquals("kvtier-test-1", b.getName());
    assertTrue(a.isDaemon() && b.isDaemon());
  }

  @Test
  void named_givesEveryThreadTheSameName() {
    ThreadFactory f = DaemonThreads.named("kvtier-one");
    assertEquals("kvtier-one", f.newThread(() -> {}).getName());
    assertEquals("kvtier-one", f.newThread(() -> {}).getName());
    assertTrue(f.newThread(() -> {}).isDaemon());
  }
}
