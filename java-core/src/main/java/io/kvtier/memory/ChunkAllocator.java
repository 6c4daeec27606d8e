package io.kvtier.memory;

/**
 * Where a CPU tier gets the buffers it keeps chunks in: one {@link ChunkPool} of equal slots (a
 * vLLM worker: every chunk has the model's size), or {@link SizeClassPools} (the cache server:
 * values of any size up to a limit under one budget).
 */
public interface ChunkAllocator {
  /**
   * A buffer of {@code length} bytes, or null when none is free (the caller evicts and tries again,
   * or drops); never blocks.
   *
   * @throws IllegalArgumentException if {@code length} is negative or above {@link #maxBytes()}
   */
  ChunkBuffer tryAllocate(long length);

  /** Whether {@code buffer} came from this allocator (it can then be kept without a copy). */
  boolean owns(ChunkBuffer buffer);

  /** The largest buffer it hands out. */
  long maxBytes();
}
