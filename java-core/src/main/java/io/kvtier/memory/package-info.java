/**
 * Host memory for chunks: {@link io.kvtier.memory.ChunkPool} (fixed-size slots in lazily mapped
 * slabs), {@link io.kvtier.memory.ChunkBuffer} (a reference-counted slot), {@link
 * io.kvtier.memory.HostAllocator} (where slabs come from) and {@link
 * io.kvtier.memory.LeakDetector}.
 */
package io.kvtier.memory;
