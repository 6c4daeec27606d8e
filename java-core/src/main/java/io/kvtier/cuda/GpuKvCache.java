package io.kvtier.cuda;

import static io.kvtier.cuda.Cuda.check;

import io.kvtier.transfer.KvCacheTransfer;
import io.kvtier.transfer.PagedLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUevent;
import jcuda.driver.CUevent_flags;
import jcuda.driver.CUmemorytype;
import jcuda.driver.CUpointer_attribute;
import jcuda.driver.CUstream;
import jcuda.driver.CUstream_flags;
import jcuda.driver.JCudaDriver;

/**
 * A model's paged KV cache on a GPU (vLLM's tensors, by device address), moved to and from pinned
 * host chunks by the {@code kv_copy} kernels: one launch per call, every layer of the call at once,
 * driven by the slot mapping.
 *
 * <p><b>Streams.</b> Each calling thread has its own lane: a non-blocking stream, a ring of
 * argument buffers and, for {@link Mode#DMA}, a device staging buffer of one chunk. Copies are
 * enqueued and return at once; {@link #complete} waits for the calling thread's. Ordering against
 * vLLM's stream (DESIGN invariant 1) is by events: {@link #recordFence} marks vLLM's stream, and
 * every later copy waits for that mark on the GPU before touching a block; {@link
 * #orderBeforeCompute} makes vLLM's stream wait for the calling thread's copies into blocks.
 *
 * <p><b>Modes.</b> {@link Mode#MAPPED}: the kernel reads or writes the pinned chunk through its
 * device mapping (one pass over the bytes). {@link Mode#DMA}: the kernel gathers into (scatters
 * from) a device staging buffer, and the copy engine moves it with one {@code cuMemcpy*Async}.
 * Chunks not allocated by the given {@link PinnedHostAllocator} always go by DMA.
 *
 * <p>Thread-safe as long as callers do not move the same tokens concurrently.
 */
public final class GpuKvCache implements KvCacheTransfer, AutoCloseable {
  /** How chunk bytes cross the bus. */
  public enum Mode {
    MAPPED,
    DMA;

    /**
     * Parses {@code mapped} or {@code dma}.
     *
     * @throws IllegalArgumentException naming what is allowed
     */
    public static Mode parse(String s) {
      try {
        return valueOf(s.trim().toUpperCase(Locale.ROOT));
      } catch (IllegalArgumentException e) {
        throw new IllegalArgumentException("copy mode '" + s + "' is not one of mapped, dma", e);
      }
    }
  }

  /** Argument buffers per lane: that many launches may be in flight before one is reused. */
  private static final int ARG_SLOTS = 16;

  private final CudaContext context;
  private final PinnedHostAllocator pinned;
  private final PagedLayout layout;
  private final long[] layerAddresses;
  private final Mode gatherMode;
  private final Mode scatterMode;
  private final KvCopyKernels kernels;
  private final CUdeviceptr layerTable = new CUdeviceptr();
  private final CUevent fence = new CUevent();
  private volatile boolean fenced;
  private final ThreadLocal<Lane> lanes = new ThreadLocal<>();
  private final List<Lane> allLanes = new ArrayList<>();
  private boolean closed;

  /**
   * Binds vLLM's per-layer KV tensors ({@code tensor.data_ptr()} of each layer, in model order).
   *
   * @throws IllegalArgumentException if an address is 0, or a layer's view is not device memory of
   *     this context or reaches past its allocation (a layout that does not fit the tensors)
   */
  public GpuKvCache(
      CudaContext context,
      long[] layerAddresses,
      PagedLayout layout,
      PinnedHostAllocator pinned,
      Mode gatherMode,
      Mode scatterMode) {
    if (layerAddresses.length == 0) {
      throw new IllegalArgumentException("a KV cache needs at least one layer");
    }
    this.context = context;
    this.pinned = pinned;
    this.layout = layout;
    this.layerAddresses = layerAddresses.clone();
    this.gatherMode = gatherMode;
    this.scatterMode = scatterMode;
    context.makeCurrent();
    for (int l = 0; l < layerAddresses.length; l++) {
      checkDeviceRange(l, layerAddresses[l], layout.tensorBytes());
    }
    this.kernels = new KvCopyKernels();
    long tableBytes = 8L * layerAddresses.length;
    check(JCudaDriver.cuMemAlloc(layerTable, tableBytes), "cuMemAlloc(layer table)");
    check(
        JCudaDriver.cuMemcpyHtoD(layerTable, Pointer.to(this.layerAddresses), tableBytes),
        "cuMemcpyHtoD(layer table)");
    check(JCudaDriver.cuEventCreate(fence, CUevent_flags.CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  }

  private static void checkDeviceRange(int layer, long address, long bytes) {
    if (address == 0) {
      throw new IllegalArgumentException("layer " + layer + " has address 0");
    }
    CUdeviceptr p = Cuda.device(address);
    int[] type = new int[1];
    int rc =
        JCudaDriver.cuPointerGetAttribute(
            Pointer.to(type), CUpointer_attribute.CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p);
    if (rc != 0 || type[0] != CUmemorytype.CU_MEMORYTYPE_DEVICE) {
      throw new IllegalArgumentException(
          String.format(
              "layer %d at 0x%x is not device memory of this context (%s)",
              layer, address, rc != 0 ? new CudaException("cuPointerGetAttribute", rc) : "host"));
    }
    long[] start = new long[1];
    long[] size = new long[1];
    check(
        JCudaDriver.cuPointerGetAttribute(
            Pointer.to(start), CUpointer_attribute.CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, p),
        "cuPointerGetAttribute(range start)");
    check(
        JCudaDriver.cuPointerGetAttribute(
            Pointer.to(size), CUpointer_attribute.CU_POINTER_ATTRIBUTE_RANGE_SIZE, p),
        "cuPointerGetAttribute(range size)");
    if (address + bytes > start[0] + size[0]) {
      throw new IllegalArgumentException(
          String.format(
              "layer %d's view needs %d bytes from 0x%x; its allocation ends %d bytes after it",
              layer, bytes, address, start[0] + size[0] - address));
    }
  }

  @Override
  public int layerCount() {
    return layerAddresses.length;
  }

  @Override
  public PagedLayout layout() {
    return layout;
  }

  /**
   * Marks vLLM's stream ({@code torch.cuda.current_stream().cuda_stream}) now: every copy started
   * after this returns waits on the GPU until vLLM's work enqueued so far has finished.
   */
  public void recordFence(long rawStream) {
    context.makeCurrent();
    check(JCudaDriver.cuEventRecord(fence, Cuda.stream(rawStream)), "cuEventRecord(fence)");
    fenced = true;
  }

  /**
   * Makes vLLM's stream wait on the GPU for the copies the calling thread has started so far (no
   * CPU wait): attention then never reads a block before the copy into it is done.
   */
  public void orderBeforeCompute(long rawStream) {
    Lane ln = lanes.get();
    if (ln == null) {
      return;
    }
    context.makeCurrent();
    check(JCudaDriver.cuEventRecord(ln.done, ln.stream), "cuEventRecord");
    check(JCudaDriver.cuStreamWaitEvent(Cuda.stream(rawStream), ln.done, 0), "cuStreamWaitEvent");
  }

  @Override
  public void gather(int[] blockIds, int firstToken, int count, MemorySegment chunk) {
    long[] slots = KvCacheTransfer.slots(layout, blockIds, firstToken, count);
    launch(false, 0, layerCount(), slots, chunk, count, 0);
  }

  @Override
  public void gatherLayer(
      int layer, int[] blockIds, int firstToken, int count, MemorySegment chunk) {
    long[] slots = KvCacheTransfer.slots(layout, blockIds, firstToken, count);
    launch(false, checkLayer(layer), 1, slots, chunk, count, 0);
  }

  @Override
  public void scatter(
      MemorySegment chunk, int rowTokens, int[] blockIds, int chunkStart, int skip, int count) {
    long[] slots = KvCacheTransfer.slots(layout, blockIds, chunkStart + skip, count);
    launch(true, 0, layerCount(), slots, chunk, rowTokens, skip);
  }

  @Override
  public void scatterLayer(
      int layer,
      MemorySegment chunk,
      int rowTokens,
      int[] blockIds,
      int chunkStart,
      int skip,
      int count) {
    long[] slots = KvCacheTransfer.slots(layout, blockIds, chunkStart + skip, count);
    launch(true, checkLayer(layer), 1, slots, chunk, rowTokens, skip);
  }

  private int checkLayer(int layer) {
    if (layer < 0 || layer >= layerAddresses.length) {
      throw new IllegalArgumentException(
          "layer " + layer + " is outside 0.." + (layerAddresses.length - 1));
    }
    return layer;
  }

  /** Waits for the calling thread's copies. */
  @Override
  public void complete() {
    Lane ln = lanes.get();
    if (ln != null) {
      context.makeCurrent();
      check(JCudaDriver.cuStreamSynchronize(ln.stream), "cuStreamSynchronize");
    }
  }

  private void launch(
      boolean toCache,
      int firstLayer,
      int layerCount,
      long[] slots,
      MemorySegment chunk,
      int rowTokens,
      int skip) {
    int count = slots.length;
    if (count == 0) {
      return;
    }
    long chunkBytes = rowTokens * tokenBytes();
    if (chunk.byteSize() < chunkBytes) {
      throw new IllegalArgumentException(
          "the chunk has " + chunk.byteSize() + " bytes; " + chunkBytes + " are needed");
    }
    context.makeCurrent();
    Lane ln = lane();
    Mode mode = toCache ? scatterMode : gatherMode;
    long target = mode == Mode.MAPPED ? pinned.deviceAddress(chunk.address(), chunkBytes) : 0;
    boolean dma = target == 0;
    if (dma) {
      target = ln.staging(chunkBytes);
    }
    long[] touched = java.util.Arrays.copyOf(layerAddresses, layerAddresses.length + 1);
    touched[layerAddresses.length] = target;
    KvCopyArgs a = KvCopyArgs.plan(layout, firstLayer, layerCount, rowTokens, skip, count, touched);
    ArgSlot s = ln.slot(count + 1);
    MemorySegment.copy(slots, 0, s.host, ValueLayout.JAVA_LONG, 0, count);
    s.host.setAtIndex(ValueLayout.JAVA_LONG, count, target);
    long argBytes = 8L * (count + 1);
    check(
        JCudaDriver.cuMemcpyHtoDAsync(s.device, Cuda.host(s.host.address()), argBytes, ln.stream),
        "cuMemcpyHtoDAsync(slots)");
    if (fenced) {
      check(JCudaDriver.cuStreamWaitEvent(ln.stream, fence, 0), "cuStreamWaitEvent(fence)");
    }
    long layerBytes = rowTokens * layout.tokenBytes();
    long from = firstLayer * layerBytes;
    long bytes = layerCount * layerBytes;
    if (toCache && dma) {
      check(
          JCudaDriver.cuMemcpyHtoDAsync(
              Cuda.device(target + from), Cuda.host(chunk.address() + from), bytes, ln.stream),
          "cuMemcpyHtoDAsync(chunk)");
    }
    long slotTable = Cuda.raw(s.device);
    kernels.launch(toCache, a, Cuda.raw(layerTable), slotTable, slotTable + 8L * count, ln.stream);
    if (!toCache && dma) {
      check(
          JCudaDriver.cuMemcpyDtoHAsync(
              Cuda.host(chunk.address() + from), Cuda.device(target + from), bytes, ln.stream),
          "cuMemcpyDtoHAsync(chunk)");
    }
    check(JCudaDriver.cuEventRecord(s.used, ln.stream), "cuEventRecord");
    s.pending = true;
  }

  private Lane lane() {
    Lane ln = lanes.get();
    if (ln == null) {
      synchronized (allLanes) {
        if (closed) {
          throw new IllegalStateException("the GPU KV cache is closed");
        }
        ln = new Lane();
        allLanes.add(ln);
      }
      lanes.set(ln);
    }
    return ln;
  }

  /** One thread's stream, events and buffers. Used by that thread only, until close. */
  private final class Lane {
    final CUstream stream = new CUstream();
    final CUevent done = new CUevent();
    final ArgSlot[] args = new ArgSlot[ARG_SLOTS];
    int next;
    CUdeviceptr staging;
    long stagingBytes;

    Lane() {
      check(
          JCudaDriver.cuStreamCreate(stream, CUstream_flags.CU_STREAM_NON_BLOCKING),
          "cuStreamCreate");
      check(
          JCudaDriver.cuEventCreate(done, CUevent_flags.CU_EVENT_DISABLE_TIMING), "cuEventCreate");
    }

    /** The next argument buffer, with room for {@code longs} values, once its last use is done. */
    ArgSlot slot(int longs) {
      int i = next;
      next = (next + 1) % ARG_SLOTS;
      if (args[i] == null) {
        args[i] = new ArgSlot();
      }
      ArgSlot s = args[i];
      if (s.pending) {
        check(JCudaDriver.cuEventSynchronize(s.used), "cuEventSynchronize");
        s.pending = false;
      }
      s.ensure(longs);
      return s;
    }

    /**
     * Device staging of at least {@code bytes}, grown when needed (stream order keeps reuse safe).
     */
    long staging(long bytes) {
      if (stagingBytes < bytes) {
        if (staging != null) {
          check(JCudaDriver.cuStreamSynchronize(stream), "cuStreamSynchronize");
          check(JCudaDriver.cuMemFree(staging), "cuMemFree");
        }
        staging = new CUdeviceptr();
        check(JCudaDriver.cuMemAlloc(staging, bytes), "cuMemAlloc(staging " + bytes + ")");
        stagingBytes = bytes;
      }
      return Cuda.raw(staging);
    }

    void destroy() {
      JCudaDriver.cuStreamSynchronize(stream);
      for (ArgSlot s : args) {
        if (s != null) {
          s.free();
        }
      }
      if (staging != null) {
        JCudaDriver.cuMemFree(staging);
      }
      JCudaDriver.cuEventDestroy(done);
      JCudaDriver.cuStreamDestroy(stream);
    }
  }

  /** Slots and chunk addresses of one launch: pinned on the host, copied to the device. */
  private final class ArgSlot {
    final CUevent used = new CUevent();
    MemorySegment host;
    CUdeviceptr device;
    int capacity;
    boolean pending;

    ArgSlot() {
      check(
          JCudaDriver.cuEventCreate(used, CUevent_flags.CU_EVENT_DISABLE_TIMING), "cuEventCreate");
    }

    void ensure(int longs) {
      if (capacity >= longs) {
        return;
      }
      release();
      int n = Math.max(longs, 512);
      host = pinned.allocate(8L * n);
      device = new CUdeviceptr();
      check(JCudaDriver.cuMemAlloc(device, 8L * n), "cuMemAlloc(arguments)");
      capacity = n;
    }

    private void release() {
      if (host != null) {
        pinned.free(host);
        JCudaDriver.cuMemFree(device);
        host = null;
        capacity = 0;
      }
    }

    void free() {
      release();
      JCudaDriver.cuEventDestroy(used);
    }
  }

  /** Waits for every lane, then frees streams, buffers and the module. Idempotent. */
  @Override
  public void close() {
    synchronized (allLanes) {
      if (closed) {
        return;
      }
      closed = true;
      context.makeCurrent();
      for (Lane ln : allLanes) {
        ln.destroy();
      }
      allLanes.clear();
    }
    JCudaDriver.cuEventDestroy(fence);
    JCudaDriver.cuMemFree(layerTable);
    kernels.unload();
  }
}
