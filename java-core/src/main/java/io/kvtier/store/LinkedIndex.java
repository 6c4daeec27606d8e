package io.kvtier.store;

import io.kvtier.key.ChunkKey;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.Consumer;

/**
 * LRU (access order) or FIFO (insertion order) index on a {@link LinkedHashMap}. Eviction walks
 * from the eldest entry and skips pinned ones. Thread-safe: every method holds the index's monitor
 * for O(1) work, except eviction, which is O(pinned entries skipped).
 */
final class LinkedIndex implements EvictionIndex {
  private final long capacityBytes;
  private final Consumer<IndexEntry> onEvict;

  // Guarded by this.
  private final LinkedHashMap<ChunkKey, IndexEntry> map;
  private long bytes;

  LinkedIndex(long capacityBytes, boolean accessOrder, Consumer<IndexEntry> onEvict) {
    this.capacityBytes = capacityBytes;
    this.onEvict = onEvict;
    this.map = new LinkedHashMap<>(1024, 0.75f, accessOrder);
  }

  @Override
  public synchronized boolean contains(ChunkKey key) {
    return map.containsKey(key);
  }

  @Override
  public synchronized IndexEntry get(ChunkKey key) {
    return map.get(key); // moves the entry to the tail in access order
  }

  @Override
  public synchronized boolean putIfAbsent(ChunkKey key, IndexEntry entry) {
    if (map.putIfAbsent(key, entry) != null) {
      return false;
    }
    bytes += entry.bytes;
    while (bytes > capacityBytes && evictOne()) {
      // evictOne removes the eldest unpinned entry
    }
    return true;
  }

  @Override
  public synchronized IndexEntry remove(ChunkKey key) {
    IndexEntry e = map.remove(key);
    if (e != null) {
      bytes -= e.bytes;
    }
    return e;
  }

  @Override
  public synchronized boolean pin(ChunkKey key) {
    IndexEntry e = map.get(key);
    if (e == null) {
      return false;
    }
    e.pins++;
    return true;
  }

  @Override
  public synchronized void unpin(ChunkKey key) {
    IndexEntry e = map.get(key);
    if (e != null && e.pins > 0) {
      e.pins--;
    }
  }

  @Override
  public synchronized boolean evictOne() {
    Iterator<Map.Entry<ChunkKey, IndexEntry>> it = map.entrySet().iterator();
    while (it.hasNext()) {
      IndexEntry e = it.next().getValue();
      if (e.pins == 0) {
        it.remove();
        bytes -= e.bytes;
        onEvict.accept(e);
        return true;
      }
    }
    return false;
  }

  @Override
  public synchronized long size() {
    return map.size();
  }

  @Override
  public synchronized long bytes() {
    return bytes;
  }

  @Override
  public synchronized void evictAll() {
    for (IndexEntry e : map.values()) {
      onEvict.accept(e);
    }
    map.clear();
    bytes = 0;
  }
}
