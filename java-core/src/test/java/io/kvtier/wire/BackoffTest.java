package io.kvtier.wire;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class BackoffTest {
  @Test
  void nextDelay_doublesUpToTheCap_andResetStartsOver() {
    Backoff b = new Backoff(100, 500);
    assertEquals(100, b.nextDelayNanos());
    assertEquals(200, b.nextDelayNanos());
    assertEquals(400, b.nextDelayNanos());
    assertEquals(500, b.nextDelayNanos());
    assertEquals(500, b.nextDelayNanos());
    b.reset();
    assertEquals(100, b.nextDelayNanos());
  }

  @Test
  void nextDelay_nearLongMax_doesNotOverflow() {
    Backoff b = new Backoff(Long.MAX_VALUE / 2 + 1, Long.MAX_VALUE);
    b.nextDelayNanos();
    assertEquals(Long.MAX_VALUE, b.nextDelayNanos());
  }

  @Test
  void constructor_capBelowFirstDelay_throws() {
    assertThrows(IllegalArgumentException.class, () -> new Backoff(0, 10));
    assertThrows(IllegalArgumentException.class, () -> new Backoff(10, 5));
  }
}
