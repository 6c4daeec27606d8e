package io.kvtier;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class ChecksTest {
  @Test
  void checkPositive_positive_returnsValue() {
    assertEquals(5L, Checks.checkPositive(5L, "capacityBytes"));
    assertEquals(1, Checks.checkPositive(1, "threads"));
  }

  @Test
  void checkPositive_zero_messageNamesKeyAndValue() {
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> Checks.checkPositive(0L, "slotBytes"));
    assertEquals("slotBytes must be > 0, got 0", e.getMessage());
  }

  @Test
  void checkNonNegative_negative_throws() {
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class, () -> Checks.checkNonNegative(-3, "byteCount"));
    assertEquals("byteCount must be >= 0, got -3", e.getMessage());
  }
}
