package io.kvtier.store;

import io.kvtier.config.CachePolicy;
import io.kvtier.key.ChunkKey;
import java.util.function.Consumer;

/**
 * What the CPU tier holds and which entry goes first: bookkeeping only, no bytes are moved here.
 * Weighed in bytes; pinned entries are never chosen for eviction. An evicted entry is handed to the
 * eviction callback, which releases its buffer.
 *
 * <p>Implementations are thread-safe: {@link CaffeineIndex} (W-TinyLFU) and {@link LinkedIndex}
 * (LRU, FIFO).
 */
interface EvictionIndex {
  static EvictionIndex create(
      CachePolicy policy, long capacityBytes, Consumer<IndexEntry> onEvict) {
    return switch (policy) {
      case TINYLFU -> new CaffeineIndex(capacityBytes, onEvict);
      case LRU -> new LinkedIndex(capacityBytes, true, onEvict);
      case FIFO -> new LinkedIndex(capacityBytes, false, onEvict);
    };
  }

  /** Whether {@code key} is present; not an access. */
  boolean contains(ChunkKey key);

  /** The entry for {@code key}, recorded as an access; null if absent. */
  IndexEntry get(ChunkKey key);

  /**
   * Adds {@code entry} unless {@code key} is present; may evict others to stay within budget.
   *
   * @return true if added
   */
  boolean putIfAbsent(ChunkKey key, IndexEntry entry);

  /** Removes {@code key} without calling the eviction callback; returns the entry or null. */
  IndexEntry remove(ChunkKey key);

  /** Adds a pin; false if absent. */
  boolean pin(ChunkKey key);

  /** Drops a pin if there is one. */
  void unpin(ChunkKey key);

  /** Evicts the coldest unpinned entry through the callback; false if there is none. */
  boolean evictOne();

  /** Entries held. */
  long size();

  /** Bytes held, pinned entries included. */
  long bytes();

  /** Removes every entry through the eviction callback (used by close). */
  void evictAll();
}
