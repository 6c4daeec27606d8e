package io.kvtier.bridge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class BridgeProbeTest {
  @Test
  void ping_returnsSumOfArguments() {
    assertEquals(6L + Integer.MAX_VALUE, BridgeProbe.ping(Integer.MAX_VALUE, 2, 4));
  }

  @Test
  void javaFeatureVersion_isAtLeast25() {
    assertTrue(BridgeProbe.javaFeatureVersion() >= 25);
  }

  @Test
  void fail_throwsWithGivenMessage() {
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> BridgeProbe.fail("boom 42"));
    assertEquals("boom 42", e.getMessage());
  }
}
