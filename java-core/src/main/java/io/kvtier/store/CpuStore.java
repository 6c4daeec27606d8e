package io.kvtier.store;

import static io.kvtier.Checks.checkPositive;

import io.kvtier.config.CachePolicy;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkAllocator;
import io.kvtier.memory.ChunkBuffer;
import java.lang.foreign.MemorySegment;

/**
 * The CPU tier: chunks in buffers of a {@link ChunkAllocator} (a pool's slots), indexed by an
 * {@link EvictionIndex} weighed in bytes.
 *
 * <p>A put of a buffer from this store's own allocator keeps a reference to it (no copy); any other
 * buffer is copied into a fresh one. When the allocator has none free, the coldest unpinned chunks
 * are evicted until one frees; if none can be, the put is dropped and counted. Never blocks.
 *
 * <p>Thread-safe. Owns the index's references; does not own the pool (the caller closes it after
 * the store).
 */
public final class CpuStore implements KvStore {
  private final ChunkAllocator pool;
  private final EvictionIndex index;
  private final StoreCounters counters = new StoreCounters();
  private volatile TierListener listener = TierListener.NONE;
  private volatile boolean closed;

  /**
   * Creates a CPU tier over {@code pool} holding at most {@code capacityBytes} of chunks.
   *
   * @throws IllegalArgumentException if {@code capacityBytes <= 0}
   */
  public CpuStore(ChunkAllocator pool, long capacityBytes, CachePolicy policy) {
    this.pool = pool;
    checkPositive(capacityBytes, "capacityBytes");
    this.index =
        EvictionIndex.create(
            policy,
            capacityBytes,
            e -> {
              counters.evictions.increment();
              e.buffer.release();
              listener.removed(e.key, Medium.MEMORY);
            });
  }

  @Override
  public void listen(TierListener listener) {
    this.listener = listener;
  }

  /** The allocator whose buffers this store keeps without copying. */
  public ChunkAllocator pool() {
    return pool;
  }

  @Override
  public boolean contains(ChunkKey key) {
    checkOpen();
    return index.contains(key);
  }

  @Override
  public boolean put(ChunkKey key, ChunkBuffer chunk) {
    checkOpen();
    if (index.contains(key)) {
      counters.duplicatePuts.increment();
      return false;
    }
    ChunkBuffer own;
    if (pool.owns(chunk)) {
      own = chunk.retain();
    } else {
      own = allocate(chunk.length());
      if (own == null) {
        counters.droppedPuts.increment();
        return false;
      }
      MemorySegment.copy(chunk.segment(), 0, own.segment(), 0, chunk.length());
    }
    if (!index.putIfAbsent(key, new IndexEntry(key, own))) {
      own.release();
      counters.duplicatePuts.increment();
      return false;
    }
    counters.puts.increment();
    listener.stored(key, Medium.MEMORY);
    return true;
  }

  /**
   * Allocates a buffer of this store's allocator for {@code length} bytes, evicting the coldest
   * unpinned chunks while it has none; null if nothing more can be evicted.
   */
  public ChunkBuffer allocate(long length) {
    checkOpen();
    ChunkBuffer b = pool.tryAllocate(length);
    while (b == null && index.evictOne()) {
      b = pool.tryAllocate(length);
    }
    return b;
  }

  @Override
  public ChunkBuffer get(ChunkKey key) {
    checkOpen();
    IndexEntry e = index.get(key);
    if (e == null || !e.buffer.tryRetain()) {
      counters.misses.increment();
      return null;
    }
    counters.hits.increment();
    return e.buffer;
  }

  @Override
  public boolean pin(ChunkKey key) {
    checkOpen();
    return index.pin(key);
  }

  @Override
  public void unpin(ChunkKey key) {
    checkOpen();
    index.unpin(key);
  }

  @Override
  public boolean remove(ChunkKey key) {
    checkOpen();
    IndexEntry e = index.remove(key);
    if (e == null) {
      return false;
    }
    e.buffer.release();
    listener.removed(key, Medium.MEMORY);
    return true;
  }

  /**
   * Removes every chunk (pinned ones too: their pins then find nothing, and buffers held by readers
   * stay valid until released).
   *
   * @return chunks removed
   */
  @Override
  public int clearLocal() {
    checkOpen();
    int before = (int) Math.min(Integer.MAX_VALUE, index.size());
    index.evictAll();
    return before;
  }

  @Override
  public StoreStats stats() {
    return counters.snapshot(index.size(), index.bytes());
  }

  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    index.evictAll();
  }

  private void checkOpen() {
    if (closed) {
      throw new IllegalStateException("CpuStore is closed");
    }
  }
}
