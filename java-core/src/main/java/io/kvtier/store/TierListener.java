package io.kvtier.store;

import io.kvtier.key.ChunkKey;

/**
 * Told when a local tier starts or stops holding a chunk: what a KV-aware router needs to know
 * (kvtier's KV events). Called on the thread that changed the tier, possibly under the tier's
 * locks: an implementation only records and returns, never calls back into a store.
 */
public interface TierListener {
  /** Listens to nothing. */
  TierListener NONE =
      new TierListener() {
        @Override
        public void stored(ChunkKey key, KvStore.Medium medium) {}

        @Override
        public void removed(ChunkKey key, KvStore.Medium medium) {}
      };

  /** {@code key} is now readable from the tier on {@code medium}. */
  void stored(ChunkKey key, KvStore.Medium medium);

  /** {@code key} left the tier on {@code medium} (evicted, removed, cleared or found corrupt). */
  void removed(ChunkKey key, KvStore.Medium medium);
}
