package io.kvtier.memory;

import static io.kvtier.Checks.checkPositive;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A pool of fixed-size chunk slots in host memory, grown lazily in slabs.
 *
 * <p>Implementation note. Memory comes from a {@link HostAllocator} in slabs of {@code
 * slotsPerSlab} slots; a slab is only allocated when no free slot is left and the capacity allows
 * another. Slots never move and are all the same size, so there is no fragmentation:
 *
 * <pre>
 *   slab 0                                   slab 1 (allocated on demand)
 *   +--------+--------+-----+--------+       +--------+-----
 *   | slot 0 | slot 1 | ... | slot k-1|      | slot k | ...
 *   +--------+--------+-----+--------+       +--------+-----
 *   slot i lives in slab i / k at offset (i % k) * strideBytes
 * </pre>
 *
 * Free slots sit on a LIFO stack (recently freed slots are warm in cache and TLB). Each new slab is
 * handed to {@link HostAllocator#prefault} on a background thread, so pages are mostly resident by
 * the time chunks are written into them, without delaying the allocation that mapped the slab. The
 * stride is the slot size rounded up to 4 KiB so every slot is page-aligned (O_DIRECT and DMA
 * friendly).
 *
 * <p>Thread-safe: allocation and free take the pool's monitor for a few instructions; mapping a new
 * slab happens under it too, but an allocator maps without touching pages. Closing the pool stops
 * allocation at once and returns the slabs to the allocator when the last buffer is released, so a
 * reader never sees memory unmapped under it. A pool closed while slots are held is reported to
 * {@link LeakDetector} (with the allocation sites of the held slots when paranoid) until they come
 * back: its owner closes it once everything that used it is closed, so a slot still held then is in
 * flight somewhere or leaked.
 */
public final class ChunkPool implements ChunkAllocator, AutoCloseable {
  /** Slot alignment and stride granularity, in bytes. */
  public static final long PAGE_BYTES = 4096;

  /** Default slab size, in bytes, when the caller does not choose one. */
  public static final long DEFAULT_SLAB_BYTES = 256L << 20;

  private final HostAllocator allocator;
  private final long slotBytes;
  private final long strideBytes;
  private final int capacitySlots;
  private final int slotsPerSlab;
  private final AtomicLong allocationFailures = new AtomicLong();

  /** Shared with other pools when memory is budgeted across them; null: this pool's capacity. */
  private final MemoryBudget budget;

  // Guarded by this.
  private final List<MemorySegment> slabs = new ArrayList<>(); // null: a slab trimmed away
  private int[] freeStack;
  private int freeTop;
  private int mappedSlots;
  private int liveSlabs;
  private int[] trimmed = new int[0]; // slab indexes trimmed away, to map again first
  private int trimmedTop;
  private int inUse;
  private boolean closed;
  private boolean reportedHeldAtClose;

  /** Allocation site of each held slot when leak detection is paranoid, else null. */
  private Throwable[] allocationSites;

  /**
   * Creates an empty pool; no memory is mapped until the first allocation.
   *
   * @param allocator where slabs come from
   * @param slotBytes bytes per slot (one chunk)
   * @param capacityBytes most memory the pool may map; holds {@code capacityBytes / stride} slots
   * @param slabBytes memory mapped at a time (rounded to whole slots, at least one)
   * @throws IllegalArgumentException if a size is not positive or the capacity holds no slot
   */
  public ChunkPool(HostAllocator allocator, long slotBytes, long capacityBytes, long slabBytes) {
    this(allocator, slotBytes, capacityBytes, slabBytes, null);
  }

  /**
   * Like {@link #ChunkPool(HostAllocator, long, long, long)}, mapping a slab only when {@code
   * budget} grants its bytes (shared with other pools; given back when the slab is unmapped). With
   * one slot per slab, {@link #trimFree} unmaps free slots so that other pools of the budget can
   * grow.
   */
  public ChunkPool(
      HostAllocator allocator,
      long slotBytes,
      long capacityBytes,
      long slabBytes,
      MemoryBudget budget) {
    this.allocator = allocator;
    this.budget = budget;
    this.slotBytes = checkPositive(slotBytes, "slotBytes");
    this.strideBytes = (slotBytes + PAGE_BYTES - 1) / PAGE_BYTES * PAGE_BYTES;
    checkPositive(capacityBytes, "capacityBytes");
    checkPositive(slabBytes, "slabBytes");
    long slots = capacityBytes / strideBytes;
    if (slots == 0) {
      throw new IllegalArgumentException(
          "capacityBytes "
              + capacityBytes
              + " holds no slot of "
              + strideBytes
              + " bytes; raise max_local_cpu_size or lower chunk_size");
    }
    if (slots > Integer.MAX_VALUE - 8) {
      throw new IllegalArgumentException("capacityBytes " + capacityBytes + " is too many slots");
    }
    this.capacitySlots = (int) slots;
    this.slotsPerSlab = (int) Math.max(1, Math.min(capacitySlots, slabBytes / strideBytes));
    this.freeStack = new int[Math.min(capacitySlots, 1024)];
    this.allocationSites =
        LeakDetector.level() == LeakDetector.Level.PARANOID
            ? new Throwable[freeStack.length]
            : null;
  }

  /** Bytes per slot. */
  public long slotBytes() {
    return slotBytes;
  }

  @Override
  public long maxBytes() {
    return slotBytes;
  }

  @Override
  public boolean owns(ChunkBuffer buffer) {
    return buffer.pool() == this;
  }

  /** Bytes between slot starts: {@link #slotBytes()} rounded up to {@link #PAGE_BYTES}. */
  public long strideBytes() {
    return strideBytes;
  }

  /** Slots the pool may hold in all. */
  public int capacitySlots() {
    return capacitySlots;
  }

  /** Slots currently held by buffers. */
  public synchronized int inUseSlots() {
    return inUse;
  }

  /** Bytes currently mapped from the allocator. */
  public synchronized long mappedBytes() {
    return (long) liveSlabs * slotsPerSlab * strideBytes;
  }

  /** Allocations refused because every slot was in use. */
  public long allocationFailures() {
    return allocationFailures.get();
  }

  /**
   * Returns a buffer on a free slot with {@code length} bytes marked as data, or null when every
   * slot is in use (counted; the caller drops or evicts, it never waits). Does not block on I/O.
   *
   * @throws IllegalArgumentException if {@code length} is negative or above {@link #slotBytes()}
   * @throws IllegalStateException if the pool is closed
   * @throws OutOfMemoryError if the allocator cannot map a new slab
   */
  @Override
  public ChunkBuffer tryAllocate(long length) {
    if (length < 0 || length > slotBytes) {
      throw new IllegalArgumentException(
          "length " + length + " is outside [0, " + slotBytes + "] of this pool's slots");
    }
    int slot;
    MemorySegment segment;
    Throwable site = LeakDetector.allocationSite();
    synchronized (this) {
      if (closed) {
        throw new IllegalStateException("allocation from a closed " + this);
      }
      if (freeTop == 0 && (trimmedTop > 0 || mappedSlots < capacitySlots)) {
        mapSlab();
      }
      if (freeTop == 0) {
        allocationFailures.incrementAndGet();
        return null;
      }
      slot = freeStack[--freeTop];
      inUse++;
      segment = slotSegment(slot);
      if (allocationSites != null) {
        allocationSites[slot] = site;
      }
    }
    return new ChunkBuffer(this, slot, segment, length, site);
  }

  // Guarded by this.
  private void mapSlab() {
    if (trimmedTop > 0) { // one slot per slab: map the index trimmed last again
      if (budget != null && !budget.tryReserve(strideBytes)) {
        return;
      }
      MemorySegment slab = allocate(strideBytes);
      int index = trimmed[--trimmedTop];
      slabs.set(index, slab);
      liveSlabs++;
      Prefaulter.EXECUTOR.execute(() -> allocator.prefault(slab));
      freeStack[freeTop++] = index;
      return;
    }
    int slots = Math.min(slotsPerSlab, capacitySlots - mappedSlots);
    long bytes = (long) slots * strideBytes;
    if (budget != null && !budget.tryReserve(bytes)) {
      return;
    }
    MemorySegment slab = allocate(bytes);
    slabs.add(slab);
    liveSlabs++;
    Prefaulter.EXECUTOR.execute(() -> allocator.prefault(slab));
    if (freeStack.length < mappedSlots + slots) {
      int grown =
          (int) Math.min(capacitySlots, Math.max(2L * freeStack.length, mappedSlots + slots));
      freeStack = java.util.Arrays.copyOf(freeStack, grown);
      if (allocationSites != null) {
        allocationSites = java.util.Arrays.copyOf(allocationSites, grown);
      }
    }
    // Push in reverse so the lowest slot of the slab is handed out first.
    for (int i = slots - 1; i >= 0; i--) {
      freeStack[freeTop++] = mappedSlots + i;
    }
    mappedSlots += slots;
  }

  /** Maps {@code bytes}; a refusal gives the budget back. Guarded by this. */
  private MemorySegment allocate(long bytes) {
    try {
      return allocator.allocate(bytes);
    } catch (RuntimeException | Error e) {
      if (budget != null) {
        budget.release(bytes);
      }
      throw e;
    }
  }

  /**
   * Unmaps every free slot (pools of one slot per slab only; others keep their slabs), giving its
   * bytes back to the budget, so that another pool sharing it can map them.
   *
   * @return bytes unmapped
   */
  public long trimFree() {
    List<MemorySegment> unmap = new ArrayList<>();
    synchronized (this) {
      if (slotsPerSlab != 1 || closed) {
        return 0;
      }
      while (freeTop > 0) {
        int index = freeStack[--freeTop];
        unmap.add(slabs.set(index, null));
        if (trimmed.length == trimmedTop) {
          trimmed = java.util.Arrays.copyOf(trimmed, Math.max(16, 2 * trimmed.length));
        }
        trimmed[trimmedTop++] = index;
        liveSlabs--;
      }
    }
    unmap.forEach(allocator::free);
    long bytes = unmap.size() * strideBytes;
    if (budget != null) {
      budget.release(bytes);
    }
    return bytes;
  }

  // Guarded by this.
  private MemorySegment slotSegment(int slot) {
    MemorySegment slab = slabs.get(slot / slotsPerSlab);
    return slab.asSlice((long) (slot % slotsPerSlab) * strideBytes, strideBytes);
  }

  /**
   * Maps the first slab now (without touching it) and starts faulting its pages in on a background
   * thread, so the first chunks stored do not pay page faults. Does not block on the faulting.
   *
   * @throws IllegalStateException if the pool is closed
   */
  public synchronized void warmUp() {
    if (closed) {
      throw new IllegalStateException("warmUp of a closed " + this);
    }
    if (mappedSlots == 0) {
      mapSlab();
    }
  }

  /**
   * Waits until every slab mapped so far, by any pool, has been prefaulted on the background
   * thread, up to {@code timeoutMillis}. For tests; allocation never waits for prefaulting.
   *
   * @return false if the time ran out first
   * @throws InterruptedException if interrupted while waiting
   */
  static boolean awaitPrefaulted(long timeoutMillis) throws InterruptedException {
    // The thread takes slabs in the order they were mapped: once a marker queued now has run,
    // every earlier slab is done.
    java.util.concurrent.Future<?> marker = Prefaulter.EXECUTOR.submit(() -> {});
    try {
      marker.get(timeoutMillis, java.util.concurrent.TimeUnit.MILLISECONDS);
      return true;
    } catch (java.util.concurrent.TimeoutException e) {
      return false;
    } catch (java.util.concurrent.ExecutionException e) {
      throw new IllegalStateException("an empty task failed", e.getCause());
    }
  }

  /** One daemon thread ({@code kvtier-prefault}) faulting newly mapped slabs in, in order. */
  private static final class Prefaulter {
    static final java.util.concurrent.ExecutorService EXECUTOR =
        java.util.concurrent.Executors.newSingleThreadExecutor(
            io.kvtier.DaemonThreads.named("kvtier-prefault"));
  }

  /** Called by {@link ChunkBuffer#release()} when the last reference goes. */
  void free(int slot) {
    synchronized (this) {
      freeStack[freeTop++] = slot;
      inUse--;
      if (allocationSites != null) {
        allocationSites[slot] = null;
      }
    }
    unmapIfClosedAndIdle();
  }

  /** Returns every slab to the allocator once the pool is closed and no buffer is held. */
  private void unmapIfClosedAndIdle() {
    List<MemorySegment> toUnmap;
    boolean wasReported;
    synchronized (this) {
      if (!closed || inUse != 0) {
        return;
      }
      wasReported = reportedHeldAtClose;
      reportedHeldAtClose = false;
      toUnmap = new ArrayList<>(slabs);
      slabs.clear();
      liveSlabs = 0;
    }
    toUnmap.removeIf(java.util.Objects::isNull);
    toUnmap.forEach(allocator::free);
    if (budget != null) {
      budget.release(toUnmap.stream().mapToLong(MemorySegment::byteSize).sum());
    }
    if (wasReported) {
      LeakDetector.releasedAfterClose(this);
    }
  }

  /**
   * Stops allocation. Slabs go back to the allocator now if no buffer is held, otherwise when the
   * last one is released; until then the pool is reported to {@link LeakDetector} as closed with
   * slots held (logged at WARNING). Idempotent; does not block.
   */
  @Override
  public void close() {
    String report = null;
    synchronized (this) {
      if (closed) {
        return;
      }
      closed = true;
      if (inUse > 0) {
        // Under the monitor, so that the release of the last slot withdraws it only after this.
        reportedHeldAtClose = true;
        report = heldReport();
        LeakDetector.closedWithHeldSlots(this, report);
      }
    }
    if (report != null) {
      LeakDetector.logHeldAtClose(report);
    }
    unmapIfClosedAndIdle();
  }

  /** Most allocation sites a held-at-close report lists. */
  private static final int REPORTED_SITES = 4;

  // Guarded by this.
  private String heldReport() {
    StringBuilder sb =
        new StringBuilder(toString()).append(" closed with ").append(inUse).append(" slots held");
    if (allocationSites != null) {
      int listed = 0;
      for (int slot = 0; slot < allocationSites.length && listed < REPORTED_SITES; slot++) {
        if (allocationSites[slot] != null) {
          sb.append("\nslot ")
              .append(slot)
              .append(" allocated at")
              .append(LeakDetector.stack(allocationSites[slot]));
          listed++;
        }
      }
    }
    return sb.toString();
  }

  @Override
  public String toString() {
    return "ChunkPool(" + allocator.name() + ", " + capacitySlots + " x " + slotBytes + " bytes)";
  }
}
