package io.kvtier.store;

import com.github.benmanes.caffeine.cache.Cache;
import com.github.benmanes.caffeine.cache.Caffeine;
import com.github.benmanes.caffeine.cache.Policy;
import io.kvtier.key.ChunkKey;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;

/**
 * W-TinyLFU index on Caffeine. A pinned entry weighs 0, which Caffeine never evicts for size; pins
 * change the weight through {@code compute}, which re-weighs under the entry's lock. Maintenance
 * runs on the calling thread ({@code executor(Runnable::run)}), so evictions are synchronous and
 * deterministic.
 */
final class CaffeineIndex implements EvictionIndex {
  /** Scans per {@link #evictOne()} when the chosen entry is pinned or replaced meanwhile. */
  private static final int EVICT_ATTEMPTS = 8;

  private final Cache<ChunkKey, IndexEntry> cache;
  private final Policy.Eviction<ChunkKey, IndexEntry> eviction;
  private final Consumer<IndexEntry> onEvict;
  private final AtomicLong bytes = new AtomicLong();

  CaffeineIndex(long capacityBytes, Consumer<IndexEntry> onEvict) {
    this.onEvict = onEvict;
    this.cache =
        Caffeine.newBuilder()
            .maximumWeight(capacityBytes)
            .weigher((ChunkKey k, IndexEntry e) -> e.pins > 0 ? 0 : weightOf(e))
            .executor(Runnable::run)
            .evictionListener(
                (ChunkKey k, IndexEntry e, com.github.benmanes.caffeine.cache.RemovalCause c) -> {
                  if (e != null && c.wasEvicted()) {
                    bytes.addAndGet(-e.bytes);
                    onEvict.accept(e);
                  }
                })
            .build();
    this.eviction = cache.policy().eviction().orElseThrow();
  }

  private static int weightOf(IndexEntry e) {
    return (int) Math.min(Integer.MAX_VALUE, Math.max(1, e.bytes));
  }

  @Override
  public boolean contains(ChunkKey key) {
    return cache.asMap().containsKey(key);
  }

  @Override
  public IndexEntry get(ChunkKey key) {
    return cache.getIfPresent(key);
  }

  @Override
  public boolean putIfAbsent(ChunkKey key, IndexEntry entry) {
    bytes.addAndGet(entry.bytes); // before the insert, which may evict (and subtract) at once
    if (cache.asMap().putIfAbsent(key, entry) != null) {
      bytes.addAndGet(-entry.bytes);
      return false;
    }
    return true;
  }

  @Override
  public IndexEntry remove(ChunkKey key) {
    IndexEntry e = cache.asMap().remove(key);
    if (e != null) {
      bytes.addAndGet(-e.bytes);
    }
    return e;
  }

  @Override
  public boolean pin(ChunkKey key) {
    return cache
            .asMap()
            .computeIfPresent(
                key,
                (k, e) -> {
                  e.pins++;
                  return e;
                })
        != null;
  }

  @Override
  public void unpin(ChunkKey key) {
    cache
        .asMap()
        .computeIfPresent(
            key,
            (k, e) -> {
              if (e.pins > 0) {
                e.pins--;
              }
              return e;
            });
  }

  @Override
  public boolean evictOne() {
    for (int attempt = 0; attempt < EVICT_ATTEMPTS; attempt++) {
      // The stream walks the policy's order lazily, coldest first, so this is O(pinned skipped).
      Map.Entry<ChunkKey, IndexEntry> candidate =
          eviction.coldest(
              stream -> stream.filter(en -> en.getValue().pins == 0).findFirst().orElse(null));
      if (candidate == null) {
        return false;
      }
      IndexEntry e = candidate.getValue();
      boolean[] evicted = {false};
      cache
          .asMap()
          .computeIfPresent(
              candidate.getKey(),
              (k, current) -> {
                if (current == e && current.pins == 0) {
                  evicted[0] = true;
                  return null;
                }
                return current;
              });
      if (evicted[0]) {
        bytes.addAndGet(-e.bytes);
        onEvict.accept(e);
        return true;
      }
      // Pinned or replaced between the scan and the removal: look again.
    }
    return false;
  }

  @Override
  public long size() {
    return cache.estimatedSize();
  }

  @Override
  public long bytes() {
    return bytes.get();
  }

  @Override
  public void evictAll() {
    for (ChunkKey key : cache.asMap().keySet()) {
      IndexEntry e = remove(key);
      if (e != null) {
        onEvict.accept(e);
      }
    }
  }
}
