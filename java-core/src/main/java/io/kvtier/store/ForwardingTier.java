package io.kvtier.store;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import java.io.IOException;
import java.util.concurrent.CompletableFuture;
import java.util.function.BiConsumer;
import java.util.function.ObjIntConsumer;

/**
 * A tier that hands every call to the tier it wraps: the base of the wrappers that change a few of
 * them ({@link ReadOnlyTier}, {@link RemoteBreaker}). Owns the wrapped tier: closing closes it.
 */
public abstract class ForwardingTier implements KvStore {
  /** The wrapped tier. */
  protected final KvStore tier;

  /** Wraps {@code tier}, which this object owns from now on. */
  protected ForwardingTier(KvStore tier) {
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

  @Override
  public CompletableFuture<Integer> prefixLengthAsync(ChunkKey[] keys) {
    return tier.prefixLengthAsync(keys);
  }

  @Override
  public boolean put(ChunkKey key, ChunkBuffer chunk) {
    return tier.put(key, chunk);
  }

  @Override
  public ChunkBuffer get(ChunkKey key) throws IOException {
    return tier.get(key);
  }

  @Override
  public ChunkBuffer[] getBatch(ChunkKey[] keys) {
    return tier.getBatch(keys);
  }

  @Override
  public ChunkBuffer[] getBatch(ChunkKey[] keys, ObjIntConsumer<ChunkBuffer> arrived) {
    return tier.getBatch(keys, arrived);
  }

  @Override
  public int prefetch(ChunkKey[] keys, BiConsumer<ChunkKey, ChunkBuffer> sink) {
    return tier.prefetch(keys, sink);
  }

  @Override
  public Medium medium() {
    return tier.medium();
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
    return tier.toString();
  }
}
