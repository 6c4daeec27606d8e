package io.kvtier.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class LatenciesTest {
  @Test
  void keepsDurationsInOrderUntilDrained() {
    Latencies log = new Latencies(4);
    log.record(5);
    log.record(-3); // a clock that went back counts as zero, never negative
    log.record(7);
    assertArrayEquals(new long[] {5, 0, 7}, log.drain());
    assertArrayEquals(new long[0], log.drain());
    assertEquals(0, log.overflow());
  }

  @Test
  void pastItsCapacityCountsWhatItDropsAndKeepsTheFirst() {
    Latencies log = new Latencies(2);
    for (long i = 1; i <= 5; i++) {
      log.record(i);
    }
    assertEquals(3, log.overflow());
    assertArrayEquals(new long[] {1, 2}, log.drain());
    log.record(9);
    assertArrayEquals(new long[] {9}, log.drain(), "room again after a drain");
    assertEquals(3, log.overflow(), "the count of dropped durations is cumulative");
  }

  @Test
  void aCapacityBelowOneIsRefused() {
    assertThrows(IllegalArgumentException.class, () -> new Latencies(0));
  }
}
