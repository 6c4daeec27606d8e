package io.kvtier.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class CudaProbeTest {
  @Test
  void availability_isConsistentAndCached() {
    CudaProbe.Availability a = CudaProbe.availability();
    if (a.available()) {
      assertTrue(a.deviceCount() > 0);
      assertEquals("", a.reason());
    } else {
      assertEquals(0, a.deviceCount());
      assertFalse(a.reason().isBlank(), "an unavailable CUDA must say why");
    }
    assertTrue(a == CudaProbe.availability(), "the probe runs once per process");
  }
}
