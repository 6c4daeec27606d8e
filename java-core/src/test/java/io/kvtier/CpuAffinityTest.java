package io.kvtier;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.BitSet;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;

class CpuAffinityTest {
  @Test
  void parse_readsLinuxCpuLists() {
    BitSet cpus = CpuAffinity.parse(" 0-2, 8 ,10-11");
    assertEquals("{0, 1, 2, 8, 10, 11}", cpus.toString());
    assertTrue(CpuAffinity.parse(null).isEmpty());
    assertTrue(CpuAffinity.parse(" ").isEmpty());
  }

  @Test
  void parse_refusesWhatIsNoCpuList_namingTheProperty() {
    for (String bad : new String[] {"a", "3-1", "0-", "1024", "-1"}) {
      IllegalArgumentException e =
          assertThrows(IllegalArgumentException.class, () -> CpuAffinity.parse(bad), bad);
      assertTrue(e.getMessage().startsWith(CpuAffinity.PROPERTY + "="), e.getMessage());
    }
  }

  @Test
  void wrap_runsTheTask_andThreadsFromDaemonThreadsRunTheirs() throws Exception {
    AtomicBoolean ran = new AtomicBoolean();
    CpuAffinity.wrap(() -> ran.set(true)).run();
    assertTrue(ran.get());
    AtomicBoolean inThread = new AtomicBoolean();
    Thread t = DaemonThreads.named("kvtier-affinity-test").newThread(() -> inThread.set(true));
    t.start();
    t.join();
    assertTrue(inThread.get());
  }
}
