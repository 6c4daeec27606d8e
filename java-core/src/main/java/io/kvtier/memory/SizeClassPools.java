package io.kvtier.memory;

import static io.kvtier.Checks.checkPositive;

import java.util.concurrent.ConcurrentHashMap;

/**
 * Buffers of any size up to a limit under one memory budget: the cache server's memory, where
 * values of several models and their last, partial chunks arrive side by side.
 *
 * <p>A request is served from the pool of its size class: sizes rounded up to pages, then to the
 * next of classes {@value #CLASS_STEPS_PER_DOUBLING} per doubling (at most 1/{@value
 * #CLASS_STEPS_PER_DOUBLING} of a value is lost to rounding, about 6 %). Each class pool maps one
 * slot at a time, on demand, from the shared {@link MemoryBudget}. When the budget is spent, a
 * request that its class cannot serve unmaps the free slots of every other class ({@link
 * ChunkPool#trimFree}) and tries again, so memory follows the sizes in use; when even that fails
 * the caller evicts (a freed buffer of any class makes room for the next try).
 *
 * <pre>
 *   budget 256 MiB:  class 512 KiB: [v][v][v]...        class 3 MiB: [v][v]...
 *                    (slots mapped one by one, unmapped when another class needs the bytes)
 * </pre>
 *
 * <p>Thread-safe.
 */
public final class SizeClassPools implements ChunkAllocator, AutoCloseable {
  /** Size classes per doubling of the size. */
  public static final int CLASS_STEPS_PER_DOUBLING = 16;

  private final HostAllocator allocator;
  private final MemoryBudget budget;
  private final long maxBytes;
  private final ConcurrentHashMap<Long, ChunkPool> pools = new ConcurrentHashMap<>();
  private volatile boolean closed;

  /**
   * @param budgetBytes memory all classes may map together
   * @param maxBytes largest buffer handed out (at most the budget)
   * @throws IllegalArgumentException if a size is not positive or the largest buffer exceeds the
   *     budget
   */
  public SizeClassPools(HostAllocator allocator, long budgetBytes, long maxBytes) {
    this.allocator = allocator;
    this.budget = new MemoryBudget(budgetBytes);
    this.maxBytes = checkPositive(maxBytes, "maxBytes");
    if (classOf(maxBytes) > budgetBytes) {
      throw new IllegalArgumentException(
          "the largest value ("
              + maxBytes
              + " bytes, "
              + classOf(maxBytes)
              + " with rounding) does not fit in a budget of "
              + budgetBytes
              + " bytes");
    }
  }

  /** The slot size serving {@code length} bytes: pages, then the next class. */
  public static long classOf(long length) {
    long pages = Math.max(1, (length + ChunkPool.PAGE_BYTES - 1) / ChunkPool.PAGE_BYTES);
    if (pages <= CLASS_STEPS_PER_DOUBLING) {
      return pages * ChunkPool.PAGE_BYTES;
    }
    // Steps of 1/16 of the power of two below: 16, 17, ..., 31 x 2^k pages.
    int shift = 63 - Long.numberOfLeadingZeros(pages) - 4; // pages >> shift is in [16, 32)
    long step = 1L << shift;
    return (pages + step - 1) / step * step * ChunkPool.PAGE_BYTES;
  }

  @Override
  public ChunkBuffer tryAllocate(long length) {
    if (length < 0 || length > maxBytes) {
      throw new IllegalArgumentException(
          "length " + length + " is outside [0, " + maxBytes + "] of these pools");
    }
    if (closed) {
      throw new IllegalStateException("allocation from closed size-class pools");
    }
    long size = classOf(length);
    ChunkPool pool =
        pools.computeIfAbsent(
            size, s -> new ChunkPool(allocator, s, budget.limitBytes(), s, budget));
    ChunkBuffer b = pool.tryAllocate(length);
    if (b != null) {
      return b;
    }
    long freed = 0;
    for (ChunkPool other : pools.values()) {
      if (other != pool) {
        freed += other.trimFree();
      }
    }
    return freed > 0 ? pool.tryAllocate(length) : null;
  }

  @Override
  public boolean owns(ChunkBuffer buffer) {
    ChunkPool pool = buffer.pool();
    return pools.get(pool.slotBytes()) == pool;
  }

  @Override
  public long maxBytes() {
    return maxBytes;
  }

  /** Bytes mapped now, in every class (free slots included). */
  public long mappedBytes() {
    return budget.usedBytes();
  }

  /** The budget. */
  public long budgetBytes() {
    return budget.limitBytes();
  }

  /** Size classes in use (a pool was made for them). */
  public int classes() {
    return pools.size();
  }

  /** Stops allocation; each pool unmaps once its buffers are back (see {@link ChunkPool#close}). */
  @Override
  public void close() {
    closed = true;
    pools.values().forEach(ChunkPool::close);
  }

  @Override
  public String toString() {
    return "SizeClassPools(" + allocator.name() + ", " + budget.limitBytes() + " bytes)";
  }
}
