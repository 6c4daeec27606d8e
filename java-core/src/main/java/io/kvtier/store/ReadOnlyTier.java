package io.kvtier.store;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;

/**
 * A tier this process reads but never writes: {@link #put} stores nothing. With MLA every
 * tensor-parallel rank holds the same KV, so only the first rank writes the shared (remote) tiers
 * and the others read what it wrote, instead of every rank sending the same bytes. Everything else
 * is the wrapped tier's; closing closes it.
 */
public final class ReadOnlyTier extends ForwardingTier {
  /** Wraps {@code tier}, which this object owns from now on. */
  public ReadOnlyTier(KvStore tier) {
    super(tier);
  }

  /** Stores nothing; returns false. */
  @Override
  public boolean put(ChunkKey key, ChunkBuffer chunk) {
    return false;
  }

  @Override
  public String toString() {
    return "read-only " + tier;
  }
}
