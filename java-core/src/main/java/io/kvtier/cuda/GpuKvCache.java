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
 * <p><b>Streams.</b> Each calling thread has two lanes, one for gathers and one for scatters: a
 * non-blocking stream, a ring of argument buffers that grows rather than waits while launches queue
 * behind a fence and, for {@link Mode#DMA}, a device staging buffer. Copies are enqueued and return
 * at once; {@link #completeGathers} and {@link #completeScatters} wait for the calling thread's.
 * Ordering against vLLM's stream (DESIGN invariant 1) is by events: {@link #recordFence} marks
 * vLLM's stream, and every later copy waits for that mark on the GPU before touching a block;
 * {@link #orderBeforeCompute} makes vLLM's stream wait for the calling thread's scatters.
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

  /**
   * Most argument buffers per lane. The ring grows (from 16) while launches wait behind a fence, so
   * the thread that enqueues them does not wait for the GPU; past this it waits.
   */
  private static final int MAX_ARG_SLOTS = 1024;

  private final CudaContext context;
  private final PinnedHostAllocator pinned;
  private final PagedLayout layout;
  private final long[] layerAddresses;
  private final long layerAddressBits; // every layer base OR-ed: their common alignment
  private final Mode gatherMode;
  private final Mode scatterMode;
  private final KvCopyKernels kernels;
  private final CUdeviceptr layerTable = new CUdeviceptr();
  private final CUevent fence = new CUevent();
  private volatile boolean fenced;
  private final ThreadLocal<Lane> gatherLanes = new ThreadLocal<>();
  private final ThreadLocal<Lane> scatterLanes = new ThreadLocal<>();
  private final List<Lane> allLanes = new ArrayList<>();
  // Every driver call on this object's resources holds the read lock; close() takes the write lock.
  private final java.util.concurrent.locks.ReadWriteLock closeLock =
      new java.util.concurrent.locks.ReentrantReadWriteLock();
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
    long bits = 0;
    for (long a : layerAddresses) {
      bits |= a;
    }
    this.layerAddressBits = bits;
    this.gatherMode = gatherMode;
    this.scatterMode = scatterMode;
    context.makeCurrent();
    for (int l = 0; l < layerAddresses.length; l++) {
      checkDeviceRange(l, layerAddresses[l], layout.tensorBytes(), context.ordinal());
    }
    this.kernels = new KvCopyKernels();
    long tableBytes = 8L * layerAddresses.length;
    check(JCudaDriver.cuMemAlloc(layerTable, tableBytes), "cuMemAlloc(layer table)");
    check(
        JCudaDriver.cuMemcpyHtoD(layerTable, Pointer.to(this.layerAddresses), tableBytes),
        "cuMemcpyHtoD(layer table)");
    check(JCudaDriver.cuEventCreate(fence, CUevent_flags.CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  }

  private static void checkDeviceRange(int layer, long address, long bytes, int device) {
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
              "layer %d at 0x%x is not device memory (%s)",
              layer, address, rc != 0 ? new CudaException("cuPointerGetAttribute", rc) : "host"));
    }
    int[] ordinal = new int[1];
    check(
        JCudaDriver.cuPointerGetAttribute(
            Pointer.to(ordinal), CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p),
        "cuPointerGetAttribute(device ordinal)");
    if (ordinal[0] != device) {
      throw new IllegalArgumentException(
          String.format(
              "layer %d at 0x%x is on CUDA device %d; this cache is on device %d",
              layer, address, ordinal[0], device));
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
    withOpen(
        () -> {
          check(JCudaDriver.cuEventRecord(fence, Cuda.stream(rawStream)), "cuEventRecord(fence)");
          fenced = true;
        });
  }

  /**
   * Makes vLLM's stream wait on the GPU for the scatters the calling thread has started so far (no
   * CPU wait): attention then never reads a block before the copy into it is done.
   */
  public void orderBeforeCompute(long rawStream) {
    Lane ln = scatterLanes.get();
    if (ln == null) {
      return;
    }
    withOpen(
        () -> {
          check(JCudaDriver.cuEventRecord(ln.done, ln.stream), "cuEventRecord");
          check(
              JCudaDriver.cuStreamWaitEvent(Cuda.stream(rawStream), ln.done, 0),
              "cuStreamWaitEvent");
        });
  }

  /** Runs {@code work} with the context current, unless closed (then it throws). */
  private void withOpen(Runnable work) {
    closeLock.readLock().lock();
    try {
      if (closed) {
        throw new IllegalStateException("the GPU KV cache is closed");
      }
      context.makeCurrent();
      work.run();
    } finally {
      closeLock.readLock().unlock();
    }
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

  /** One launch per run of consecutive layers among {@code layers}. */
  @Override
  public void moveLayers(
      boolean toCache,
      int[] layers,
      MemorySegment chunk,
      int rowTokens,
      int[] blockIds,
      int chunkStart,
      int skip,
      int count) {
    for (int l : layers) {
      checkLayer(l);
    }
    long[] slots = KvCacheTransfer.slots(layout, blockIds, chunkStart + skip, count);
    int i = 0;
    while (i < layers.length) {
      int run = 1;
      while (i + run < layers.length && layers[i + run] == layers[i] + run) {
        run++;
      }
      launch(toCache, layers[i], run, slots, chunk, rowTokens, skip);
      i += run;
    }
  }

  private int checkLayer(int layer) {
    return KvCacheTransfer.checkLayer(layer, layerAddresses.length);
  }

  /** Waits for the calling thread's gathers. */
  @Override
  public void completeGathers() {
    complete(gatherLanes.get());
  }

  /** Waits for the calling thread's scatters. */
  @Override
  public void completeScatters() {
    complete(scatterLanes.get());
  }

  private void complete(Lane ln) {
    if (ln != null) {
      withOpen(() -> check(JCudaDriver.cuStreamSynchronize(ln.stream), "cuStreamSynchronize"));
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
    withOpen(() -> enqueue(toCache, firstLayer, layerCount, slots, chunk, rowTokens, skip));
  }

  private void enqueue(
      boolean toCache,
      int firstLayer,
      int layerCount,
      long[] slots,
      MemorySegment chunk,
      int rowTokens,
      int skip) {
    int count = slots.length;
    long chunkBytes = rowTokens * tokenBytes();
    Lane ln = lane(toCache);
    Mode mode = toCache ? scatterMode : gatherMode;
    long layerBytes = rowTokens * layout.tokenBytes();
    long from = firstLayer * layerBytes;
    long bytes = layerCount * layerBytes;
    long base = mode == Mode.MAPPED ? pinned.deviceAddress(chunk.address(), chunkBytes) : 0;
    boolean dma = base == 0;
    if (dma) {
      // Staging holds only the layers moved; the kernel adds the layers' offset to its base.
      base = ln.staging(bytes) - from;
    }
    KvCopyArgs a =
        KvCopyArgs.plan(
            layout, firstLayer, layerCount, rowTokens, skip, count, layerAddressBits, base + from);
    ArgSlot s = ln.slot(count + 1);
    MemorySegment.copy(slots, 0, s.host, ValueLayout.JAVA_LONG, 0, count);
    s.host.setAtIndex(ValueLayout.JAVA_LONG, count, base);
    check(
        JCudaDriver.cuMemcpyHtoDAsync(
            s.device, Cuda.host(s.host.address()), 8L * (count + 1), ln.stream),
        "cuMemcpyHtoDAsync(slots)");
    // The host side may be rewritten once this copy is done; the device side is reused in stream
    // order, after the kernel that reads it.
    check(JCudaDriver.cuEventRecord(s.used, ln.stream), "cuEventRecord");
    s.pending = true;
    if (fenced) {
      check(JCudaDriver.cuStreamWaitEvent(ln.stream, fence, 0), "cuStreamWaitEvent(fence)");
    }
    if (toCache && dma) {
      check(
          JCudaDriver.cuMemcpyHtoDAsync(
              Cuda.device(base + from), Cuda.host(chunk.address() + from), bytes, ln.stream),
          "cuMemcpyHtoDAsync(chunk)");
    }
    if (!toCache && dma && count < rowTokens) {
      // The whole layers go back to the chunk: rows the kernel does not write are zeros, not what
      // the staging buffer held before (a sliding-window group's rows before its window).
      check(
          JCudaDriver.cuMemsetD8Async(Cuda.device(base + from), (byte) 0, bytes, ln.stream),
          "cuMemsetD8Async(staging)");
    }
    long slotTable = Cuda.raw(s.device);
    kernels.launch(toCache, a, Cuda.raw(layerTable), slotTable, slotTable + 8L * count, ln.stream);
    if (!toCache && dma) {
      check(
          JCudaDriver.cuMemcpyDtoHAsync(
              Cuda.host(chunk.address() + from), Cuda.device(base + from), bytes, ln.stream),
          "cuMemcpyDtoHAsync(chunk)");
    }
  }

  /** The calling thread's lane for one direction; under the read lock. */
  private Lane lane(boolean toCache) {
    ThreadLocal<Lane> lanes = toCache ? scatterLanes : gatherLanes;
    Lane ln = lanes.get();
    if (ln == null) {
      ln = new Lane();
      synchronized (allLanes) {
        allLanes.add(ln);
      }
      lanes.set(ln);
    }
    return ln;
  }

  /** One thread's stream, events and buffers for one direction. Used by that thread only. */
  private final class Lane {
    final CUstream stream = new CUstream();
    final CUevent done = new CUevent();
    final List<ArgSlot> args = new ArrayList<>();
    int next;
    CUdeviceptr staging;
    long stagingBytes;

    Lane() {
      check(
          JCudaDriver.cuStreamCreate(stream, CUstream_flags.CU_STREAM_NON_BLOCKING),
          "cuStreamCreate");
      check(
          JCudaDriver.cuEventCreate(done, CUevent_flags.CU_EVENT_DISABLE_TIMING), "cuEventCreate");
      for (int i = 0; i < 16; i++) {
        args.add(new ArgSlot());
      }
    }

    /**
     * The next argument buffer with room for {@code longs} values. One whose last copy has not run
     * yet (queued behind a fence) is skipped by inserting a new one, up to {@link #MAX_ARG_SLOTS};
     * beyond that the thread waits for it.
     */
    ArgSlot slot(int longs) {
      ArgSlot s = args.get(next);
      if (s.pending && JCudaDriver.cuEventQuery(s.used) != 0 && args.size() < MAX_ARG_SLOTS) {
        s = new ArgSlot();
        args.add(next, s);
      } else if (s.pending) {
        check(JCudaDriver.cuEventSynchronize(s.used), "cuEventSynchronize");
      }
      s.pending = false;
      next = (next + 1) % args.size();
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
          staging = null;
          stagingBytes = 0;
        }
        CUdeviceptr p = new CUdeviceptr();
        check(JCudaDriver.cuMemAlloc(p, bytes), "cuMemAlloc(staging " + bytes + ")");
        staging = p;
        stagingBytes = bytes;
      }
      return Cuda.raw(staging);
    }

    void destroy() {
      JCudaDriver.cuStreamSynchronize(stream);
      for (ArgSlot s : args) {
        s.free();
      }
      args.clear();
      if (staging != null) {
        JCudaDriver.cuMemFree(staging);
        staging = null;
        stagingBytes = 0;
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

  /**
   * Waits for calls in progress and every lane's copies, then frees streams, buffers and the
   * module; later calls throw {@link IllegalStateException}. Idempotent.
   */
  @Override
  public void close() {
    closeLock.writeLock().lock();
    try {
      if (closed) {
        return;
      }
      closed = true;
      context.makeCurrent();
      synchronized (allLanes) {
        for (Lane ln : allLanes) {
          ln.destroy();
        }
        allLanes.clear();
      }
      JCudaDriver.cuEventDestroy(fence);
      JCudaDriver.cuMemFree(layerTable);
      kernels.unload();
    } finally {
      closeLock.writeLock().unlock();
    }
  }
}
