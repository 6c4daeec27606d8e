package io.kvtier.store;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.CachePolicy;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;

/** The contract for each policy, then behaviour specific to the CPU tier. */
class CpuStoreTest {
  abstract static class CpuContract extends KvStoreContract {
    ChunkPool pool;

    abstract CachePolicy policy();

    @Override
    protected KvStore newStore() {
      pool =
          new ChunkPool(
              MmapAllocator.INSTANCE, CHUNK_BYTES, (long) CAPACITY_CHUNKS * CHUNK_BYTES, 1 << 20);
      return new CpuStore(pool, (long) CAPACITY_CHUNKS * CHUNK_BYTES, policy());
    }

    @Override
    protected void assertNothingHeld() {
      if (pool != null) {
        assertEquals(0, pool.inUseSlots(), "the store leaked slots");
        pool.close();
      }
    }
  }

  @Nested
  class TinyLfu extends CpuContract {
    @Override
    CachePolicy policy() {
      return CachePolicy.TINYLFU;
    }
  }

  @Nested
  class Lru extends CpuContract {
    @Override
    CachePolicy policy() {
      return CachePolicy.LRU;
    }

    @Test
    void eviction_takesLeastRecentlyUsed() throws Exception {
      for (int i = 0; i < CAPACITY_CHUNKS; i++) {
        ChunkBuffer b = chunk(i, CHUNK_BYTES);
        store.put(key(i), b);
        b.release();
      }
      store.get(key(0)).release(); // 0 is now the most recent; 1 the least
      ChunkBuffer extra = chunk(500, CHUNK_BYTES);
      store.put(key(500), extra);
      extra.release();
      assertTrue(store.contains(key(0)));
      assertFalse(store.contains(key(1)));
    }
  }

  @Nested
  class Fifo extends CpuContract {
    @Override
    CachePolicy policy() {
      return CachePolicy.FIFO;
    }

    @Test
    void eviction_takesFirstStored_evenIfRecentlyRead() throws Exception {
      for (int i = 0; i < CAPACITY_CHUNKS; i++) {
        ChunkBuffer b = chunk(i, CHUNK_BYTES);
        store.put(key(i), b);
        b.release();
      }
      store.get(key(0)).release();
      ChunkBuffer extra = chunk(500, CHUNK_BYTES);
      store.put(key(500), extra);
      extra.release();
      assertFalse(store.contains(key(0)));
      assertTrue(store.contains(key(1)));
    }
  }

  @Test
  void put_poolExhaustedByReaders_dropsAndCounts() throws Exception {
    try (ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, 4096, 2 * 4096, 4096);
        ChunkPool caller = new ChunkPool(MmapAllocator.INSTANCE, 4096, 4 * 4096, 4096)) {
      CpuStore s = new CpuStore(pool, 2 * 4096, CachePolicy.LRU);
      ChunkBuffer a = caller.tryAllocate(4096);
      ChunkBuffer b = caller.tryAllocate(4096);
      ChunkBuffer c = caller.tryAllocate(4096);
      s.put(KvStoreContract.key(1), a);
      s.put(KvStoreContract.key(2), b);
      ChunkBuffer r1 = s.get(KvStoreContract.key(1));
      ChunkBuffer r2 = s.get(KvStoreContract.key(2));
      s.pin(KvStoreContract.key(1));
      s.pin(KvStoreContract.key(2));
      assertFalse(s.put(KvStoreContract.key(3), c), "no slot can be freed: dropped");
      assertEquals(1, s.stats().droppedPuts());
      assertNull(s.get(KvStoreContract.key(3)));
      r1.release();
      r2.release();
      s.close();
      a.release();
      b.release();
      c.release();
      assertEquals(0, pool.inUseSlots());
    }
  }

  @Test
  void put_ownPoolBuffer_isKeptWithoutCopy() throws Exception {
    try (ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, 4096, 4 * 4096, 4096)) {
      CpuStore s = new CpuStore(pool, 4 * 4096, CachePolicy.TINYLFU);
      ChunkBuffer b = s.allocate(4096);
      b.segment().fill((byte) 3);
      s.put(KvStoreContract.key(1), b);
      assertEquals(1, pool.inUseSlots(), "one slot shared by caller and store");
      ChunkBuffer got = s.get(KvStoreContract.key(1));
      assertEquals(b.address(), got.address());
      got.release();
      b.release();
      s.close();
      assertEquals(0, pool.inUseSlots());
    }
  }
}
