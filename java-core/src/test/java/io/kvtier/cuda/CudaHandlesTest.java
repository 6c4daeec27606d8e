package io.kvtier.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/** Raw PyTorch handles round-trip through JCuda's handle objects (no driver needed). */
class CudaHandlesTest {
  @Test
  void streamsAndEventsKeepTheirRawValue() {
    assertEquals(0x7f12_3456_7890L, Cuda.raw(Cuda.stream(0x7f12_3456_7890L)));
    assertEquals(0L, Cuda.raw(Cuda.stream(0))); // the legacy default stream
    assertEquals(0xdead_beefL, Cuda.raw(Cuda.event(0xdead_beefL)));
  }

  @Test
  void copyModesParseWithAClearError() {
    assertEquals(GpuKvCache.Mode.DMA, GpuKvCache.Mode.parse(" dma"));
    assertEquals(GpuKvCache.Mode.MAPPED, GpuKvCache.Mode.parse("Mapped"));
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> GpuKvCache.Mode.parse("zero-copy"));
    assertEquals("copy mode 'zero-copy' is not one of mapped, dma", e.getMessage());
  }

  @Test
  void failedCallsNameTheCallAndTheError() {
    CudaException e = new CudaException("cuMemAlloc(64)", 2);
    assertEquals("cuMemAlloc(64) failed: CUDA_ERROR_OUT_OF_MEMORY (2)", e.getMessage());
    assertEquals(2, e.code());
    assertThrows(CudaException.class, () -> Cuda.check(1, "cuInit"));
  }
}
