package io.kvtier.memory;

import java.lang.foreign.MemorySegment;

/**
 * Source of the large host-memory slabs a {@link ChunkPool} carves into chunk slots.
 *
 * <p>Implementations must comply with:
 *
 * <ul>
 *   <li>{@link #allocate} returns page-aligned memory and does not touch its pages (a slab of any
 *       size is ready in microseconds; pages are faulted in on first write).
 *   <li>{@link #free} is called exactly once per allocated segment, after every reader is done.
 *   <li>Both methods are thread-safe.
 * </ul>
 *
 * Implementations: {@link MmapAllocator} (anonymous private mappings); the CUDA package adds one
 * backed by {@code cuMemHostAlloc} (pinned, device-mapped).
 */
public interface HostAllocator {
  /**
   * Reserves {@code byteCount} bytes of page-aligned host memory.
   *
   * @throws OutOfMemoryError if the operating system refuses the mapping (the message says why)
   */
  MemorySegment allocate(long byteCount);

  /** Returns a segment obtained from {@link #allocate} to the operating system. */
  void free(MemorySegment segment);

  /**
   * Faults the pages of {@code segment} (from {@link #allocate}) in without changing its contents,
   * so first writes into it do not pay page faults. Blocks for as long as that takes; callers run
   * it on a background thread, possibly while other threads already write into the segment. The
   * default does nothing (for allocators whose memory is resident from the start).
   */
  default void prefault(MemorySegment segment) {}

  /** A short name for logs, e.g. {@code mmap} or {@code cuMemHostAlloc}. */
  String name();
}
