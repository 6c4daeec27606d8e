package io.kvtier.cuda;

import static io.kvtier.cuda.Cuda.check;

import io.kvtier.memory.HostAllocator;
import io.kvtier.memory.HostMemory;
import java.lang.foreign.MemorySegment;
import java.util.Map;
import java.util.concurrent.ConcurrentSkipListMap;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUresult;
import jcuda.driver.JCudaDriver;

/**
 * Page-locked host memory from {@code cuMemHostAlloc}, portable across contexts and mapped into the
 * device's address space, so copies to and from it run at full DMA speed and kernels can read and
 * write it directly ({@link #deviceAddress}). The CPU tier's slabs come from here when the KV cache
 * is on a GPU.
 *
 * <p>Thread-safe.
 */
public final class PinnedHostAllocator implements HostAllocator {
  /** Largest allocation: JCuda returns pinned memory as a ByteBuffer, limited to 2 GiB - 1. */
  public static final long MAX_ALLOCATION = Integer.MAX_VALUE;

  private record Slab(long host, long bytes, long device, Pointer pointer) {}

  private final CudaContext context;
  private final ConcurrentSkipListMap<Long, Slab> slabs = new ConcurrentSkipListMap<>();

  public PinnedHostAllocator(CudaContext context) {
    this.context = context;
  }

  /**
   * {@inheritDoc}
   *
   * @throws OutOfMemoryError if the driver cannot pin that much memory
   * @throws IllegalArgumentException above {@link #MAX_ALLOCATION} bytes
   * @throws CudaException on any other driver error
   */
  @Override
  public MemorySegment allocate(long byteCount) {
    if (byteCount > MAX_ALLOCATION) {
      // JCuda wraps the pinned memory in a ByteBuffer, which cannot exceed 2 GiB: the call would
      // pin the memory and then fail, leaking it.
      throw new IllegalArgumentException(
          "cuMemHostAlloc through JCuda is limited to "
              + MAX_ALLOCATION
              + " bytes; asked "
              + byteCount);
    }
    context.makeCurrent();
    Pointer p = new Pointer();
    int rc =
        JCudaDriver.cuMemHostAlloc(
            p,
            byteCount,
            JCudaDriver.CU_MEMHOSTALLOC_PORTABLE | JCudaDriver.CU_MEMHOSTALLOC_DEVICEMAP);
    if (rc == CUresult.CUDA_ERROR_OUT_OF_MEMORY) {
      throw new OutOfMemoryError("cuMemHostAlloc could not pin " + byteCount + " bytes");
    }
    check(rc, "cuMemHostAlloc(" + byteCount + ")");
    CUdeviceptr d = new CUdeviceptr();
    try {
      check(JCudaDriver.cuMemHostGetDevicePointer(d, p, 0), "cuMemHostGetDevicePointer");
    } catch (CudaException e) {
      JCudaDriver.cuMemFreeHost(p);
      throw e;
    }
    long host = Cuda.raw(p);
    slabs.put(host, new Slab(host, byteCount, Cuda.raw(d), p));
    return HostMemory.view(host, byteCount);
  }

  @Override
  public void free(MemorySegment segment) {
    Slab s = slabs.remove(segment.address());
    if (s == null) {
      throw new IllegalArgumentException("segment was not allocated here: " + segment);
    }
    context.makeCurrent();
    check(JCudaDriver.cuMemFreeHost(s.pointer), "cuMemFreeHost");
  }

  /**
   * The device address of {@code bytes} bytes at host address {@code hostAddress}, or 0 if they are
   * not wholly inside one slab of this allocator.
   */
  public long deviceAddress(long hostAddress, long bytes) {
    Map.Entry<Long, Slab> e = slabs.floorEntry(hostAddress);
    if (e == null) {
      return 0;
    }
    Slab s = e.getValue();
    long offset = hostAddress - s.host;
    return offset + bytes <= s.bytes ? s.device + offset : 0;
  }

  @Override
  public String name() {
    return "cuMemHostAlloc";
  }
}
