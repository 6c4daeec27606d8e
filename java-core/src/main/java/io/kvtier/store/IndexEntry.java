package io.kvtier.store;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;

/**
 * A stored chunk in an {@link EvictionIndex}: the buffer the index owns a reference to, and pins.
 */
final class IndexEntry {
  final ChunkKey key;
  final ChunkBuffer buffer;
  final long bytes;

  /** Pin count; guarded by the index's per-entry synchronisation (Caffeine compute or a lock). */
  int pins;

  IndexEntry(ChunkKey key, ChunkBuffer buffer) {
    this.key = key;
    this.buffer = buffer;
    this.bytes = buffer.length();
  }
}
