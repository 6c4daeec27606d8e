package io.kvtier.store;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import java.io.IOException;

/**
 * A tier this process reads but never writes: {@link #put} stores nothing. With MLA every
 * tensor-parallel rank holds the same KV, so only the first rank writes the shared (remote) tiers
 * and the others read what it wrote, instead of every rank sending the same bytes. Everything else
 * is the wrapped tier's; closing closes it.
 */
public final class ReadOnlyTier implements KvStore {
  private final KvStore tier;

  /** Wraps {@code tier}, which this object owns from now on. */
  public ReadOnlyTier(KvStore tier) {
    this.tier = java.util.Objects.requireNonNull(tier, "tier");
  }

  @Override
  public boolean contains(ChunkKey key) {
    return tier.contains(key);
  }

  @Override
  public int prefixLength(ChunkKey[] keys) {
    return tier.prefixLength(keys);
  }

  /** Stores nothing; returns false. */
  @Override
  public boolean put(ChunkKey key, ChunkBuffer chunk) {
    return false;
  }

  @Override
  public ChunkBuffer get(ChunkKey key) throws IOException {
    return tier.get(key);
  }

  @Override
  public Medium medium() {
    return tier.medium();
  }

  @Override
  public java.util.concurrent.CompletableFuture<Integer> prefixLengthAsync(ChunkKey[] keys) {
    return tier.prefixLengthAsync(keys);
  }

  @Override
  public ChunkBuffer[] getBatch(ChunkKey[] keys) {
    return tier.getBatch(keys);
  }

  @Override
  public boolean pin(ChunkKey key) {
    return tier.pin(key);
  }

  @Override
  public void unpin(ChunkKey key) {
    tier.unpin(key);
  }

  @Override
  public boolean remove(ChunkKey key) {
    return tier.remove(key);
  }

  @Override
  public long timeouts() {
    return tier.timeouts();
  }

  @Override
  public StoreStats stats() {
    return tier.stats();
  }

  @Override
  public boolean awaitIdle(long timeoutMillis) throws InterruptedException {
    return tier.awaitIdle(timeoutMillis);
  }

  @Override
  public void close() {
    tier.close();
  }

  @Override
  public String toString() {
    return "read-only " + tier;
  }
}
