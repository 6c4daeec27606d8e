package io.kvtier.memory;

import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;

/**
 * One chunk slot of a {@link ChunkPool}: a reference-counted view of host memory that holds one
 * chunk's bytes.
 *
 * <p>Ownership: a new buffer has one reference, owned by whoever allocated it. {@link #retain()}
 * adds one; {@link #release()} drops one, and the last release returns the slot to the pool. Every
 * holder releases exactly once. Using a buffer after its last release throws {@link
 * IllegalStateException}; an unreleased buffer that is garbage-collected is reported by {@link
 * LeakDetector}.
 *
 * <p>Thread-safe: the reference count is atomic and the length is volatile. The bytes themselves
 * are not synchronised; writers finish before the buffer is published (a store makes a chunk
 * visible only after its bytes are complete).
 */
public final class ChunkBuffer {
  private static final VarHandle REF_CNT;

  static {
    try {
      REF_CNT = MethodHandles.lookup().findVarHandle(ChunkBuffer.class, "refCnt", int.class);
    } catch (ReflectiveOperationException e) {
      throw new ExceptionInInitializerError(e);
    }
  }

  private final ChunkPool pool;
  private final int slot;
  private final MemorySegment slotSegment; // the whole stride: capacity rounded up to a page
  private final LeakDetector.Track track;

  @SuppressWarnings("unused") // accessed through REF_CNT
  private volatile int refCnt = 1;

  private volatile long length;
  private volatile long[] blockPrefixes = NO_PREFIXES;

  /** No block prefixes known. */
  private static final long[] NO_PREFIXES = new long[0];

  /**
   * @param site where the buffer is being allocated ({@link LeakDetector#allocationSite()}), or
   *     null
   */
  ChunkBuffer(ChunkPool pool, int slot, MemorySegment slotSegment, long length, Throwable site) {
    this.pool = pool;
    this.slot = slot;
    this.slotSegment = slotSegment;
    this.length = length;
    this.track = LeakDetector.track(this, "ChunkBuffer(slot " + slot + " of " + pool + ")", site);
  }

  /** The pool this buffer's slot belongs to. */
  public ChunkPool pool() {
    return pool;
  }

  /**
   * The hashes ({@code h1, h2} pairs) of the chunk's block-aligned prefixes, shortest first (the
   * last one is the chunk's own hash when it is whole blocks) (docs/keys.md, "Block prefixes"), so
   * the tiers that keep the chunk can say which shorter prefixes it serves; empty when not known.
   * Metadata only: the bytes do not depend on it.
   */
  public long[] blockPrefixes() {
    return blockPrefixes;
  }

  /** Sets {@link #blockPrefixes()} (an even number of longs; the array is not copied). */
  public void setBlockPrefixes(long[] prefixes) {
    if (prefixes.length % 2 != 0) {
      throw new IllegalArgumentException("block prefixes come in h1, h2 pairs: " + prefixes.length);
    }
    this.blockPrefixes = prefixes;
  }

  /** Bytes of chunk data held: at most {@link #capacity()}. */
  public long length() {
    return length;
  }

  /**
   * Sets how many bytes of the slot hold chunk data.
   *
   * @throws IllegalArgumentException if {@code length} is negative or above {@link #capacity()}
   */
  public void setLength(long length) {
    if (length < 0 || length > capacity()) {
      throw new IllegalArgumentException(
          "length " + length + " is outside [0, " + capacity() + "] of this slot");
    }
    this.length = length;
  }

  /** Bytes the slot can hold. */
  public long capacity() {
    return pool.slotBytes();
  }

  /**
   * The whole slot rounded up to a page ({@link ChunkPool#strideBytes()}), page-aligned: for I/O
   * that moves whole pages (O_DIRECT). Bytes past {@link #capacity()} are padding.
   *
   * @throws IllegalStateException if the buffer was released
   */
  public MemorySegment paddedSegment() {
    ensureLive();
    return slotSegment;
  }

  /**
   * The first {@link #length()} bytes of the slot.
   *
   * @throws IllegalStateException if the buffer was released
   */
  public MemorySegment segment() {
    ensureLive();
    return slotSegment.asSlice(0, length);
  }

  /**
   * The native address of the slot, for hand-off to copies that take raw addresses.
   *
   * @throws IllegalStateException if the buffer was released
   */
  public long address() {
    ensureLive();
    return slotSegment.address();
  }

  /** The current reference count; 0 once released. */
  public int refCnt() {
    return (int) REF_CNT.getVolatile(this);
  }

  /**
   * Adds a reference.
   *
   * @throws IllegalStateException if the buffer was already released
   */
  public ChunkBuffer retain() {
    if (!tryRetain()) {
      throw new IllegalStateException("retain() of a released " + this);
    }
    return this;
  }

  /**
   * Adds a reference unless the buffer was already released; never throws. Readers racing with
   * eviction use this: false means the chunk is gone.
   */
  public boolean tryRetain() {
    for (; ; ) {
      int n = (int) REF_CNT.getVolatile(this);
      if (n == 0) {
        return false;
      }
      if (REF_CNT.compareAndSet(this, n, n + 1)) {
        return true;
      }
    }
  }

  /**
   * Drops a reference; the last one returns the slot to the pool.
   *
   * @return true if this call freed the slot
   * @throws IllegalStateException if the buffer was already released
   */
  public boolean release() {
    for (; ; ) {
      int n = (int) REF_CNT.getVolatile(this);
      if (n == 0) {
        throw new IllegalStateException("release() of an already released " + this);
      }
      if (REF_CNT.compareAndSet(this, n, n - 1)) {
        if (n == 1) {
          if (track != null) {
            track.close();
          }
          pool.free(slot);
          return true;
        }
        return false;
      }
    }
  }

  private void ensureLive() {
    if (refCnt() == 0) {
      throw new IllegalStateException("use of a released " + this);
    }
  }

  @Override
  public String toString() {
    return "ChunkBuffer(slot " + slot + ", " + length + "/" + capacity() + " bytes)";
  }
}
