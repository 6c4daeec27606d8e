package io.kvtier.store;

import io.kvtier.memory.ChunkBuffer;

/**
 * A stored chunk in an {@link EvictionIndex}: the buffer the index owns a reference to, and pins.
 */
final class IndexEntry {
  final ChunkBuffer buffer;
  final long bytes;

  /** Pin count; guarded by the index's per-entry synchronisation (Caffeine compute or a lock). */
  int pins;

  IndexEntry(ChunkBuffer buffer) {
    this.buffer = buffer;
    this.bytes = buffer.length();
  }
}
