package io.kvtier.store;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.CachePolicy;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** A CPU tier in front of a larger lower tier (a second CpuStore standing in for disk). */
class TieredStoreTest extends KvStoreContract {
  private ChunkPool upperPool;
  private ChunkPool lowerPool;
  private CpuStore lower;

  @Override
  protected KvStore newStore() {
    upperPool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 4L * CHUNK_BYTES, 1 << 20);
    lowerPool =
        new ChunkPool(
            MmapAllocator.INSTANCE, CHUNK_BYTES, (long) CAPACITY_CHUNKS * CHUNK_BYTES, 1 << 20);
    CpuStore upper = new CpuStore(upperPool, 4L * CHUNK_BYTES, CachePolicy.LRU);
    lower = new CpuStore(lowerPool, (long) CAPACITY_CHUNKS * CHUNK_BYTES, CachePolicy.LRU);
    return new TieredStore(upper, List.of(lower), 2, 64);
  }

  @Override
  protected void assertNothingHeld() {
    if (upperPool != null) {
      assertEquals(0, upperPool.inUseSlots());
      upperPool.close();
    }
    if (lowerPool != null) {
      assertEquals(0, lowerPool.inUseSlots());
      lowerPool.close();
    }
  }

  private void awaitInLower(int k) throws InterruptedException {
    awaitIdle();
    assertTrue(lower.contains(key(k)), "an idle tiered store has copied the chunk down");
  }

  @Test
  void put_isCopiedDown_andLowerHitIsPromoted() throws Exception {
    TieredStore tiered = (TieredStore) store;
    ChunkBuffer b = chunk(1, CHUNK_BYTES);
    byte[] expected = bytesOf(b);
    tiered.put(key(1), b);
    b.release();
    awaitInLower(1);
    tiered.cpu().remove(key(1)); // as if evicted from CPU memory
    assertFalse(tiered.cpu().contains(key(1)));
    assertTrue(tiered.contains(key(1)));

    ChunkBuffer got = tiered.get(key(1));
    assertNotNull(got);
    assertArrayEquals(expected, bytesOf(got));
    got.release();
    assertTrue(tiered.cpu().contains(key(1)), "a lower-tier hit is promoted");
    assertEquals(1, tiered.promotions());
  }

  @Test
  void copyDown_queueFull_dropsAndCounts() throws Exception {
    CountDownLatch release = new CountDownLatch(1);
    AtomicInteger received = new AtomicInteger();
    store.close();
    ChunkPool up = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 8L * CHUNK_BYTES, 1 << 20);
    KvStore slow =
        new KvStore() {
          @Override
          public boolean contains(io.kvtier.key.ChunkKey key) {
            return false;
          }

          @Override
          public boolean put(io.kvtier.key.ChunkKey key, ChunkBuffer chunk) {
            received.incrementAndGet();
            try {
              release.await();
            } catch (InterruptedException e) {
              Thread.currentThread().interrupt();
            }
            return true;
          }

          @Override
          public ChunkBuffer get(io.kvtier.key.ChunkKey key) {
            return null;
          }

          @Override
          public boolean pin(io.kvtier.key.ChunkKey key) {
            return false;
          }

          @Override
          public void unpin(io.kvtier.key.ChunkKey key) {}

          @Override
          public boolean remove(io.kvtier.key.ChunkKey key) {
            return false;
          }

          @Override
          public StoreStats stats() {
            return new StoreStats(0, 0, 0, 0, 0, 0, 0, 0);
          }

          @Override
          public void close() {}
        };
    TieredStore t =
        new TieredStore(new CpuStore(up, 8L * CHUNK_BYTES, CachePolicy.LRU), List.of(slow), 1, 2);
    // The slow tier blocks until released, so a put that waited for it would never return.
    assertTimeoutPreemptively(
        Duration.ofSeconds(60),
        () -> {
          for (int i = 0; i < 6; i++) {
            ChunkBuffer b = chunk(i, 100);
            assertTrue(t.put(key(i), b), "the CPU tier stores it");
            b.release();
          }
        },
        "puts must not wait for a slow tier");
    assertEquals(3, t.copyDownDropped(), "1 running + 2 queued, the rest dropped");
    release.countDown();
    t.close(); // lets the running and queued copy-downs finish
    assertEquals(3, received.get(), "the copy-downs that were not dropped reached the tier");
    assertEquals(0, t.copyDownFailed());
    assertEquals(0, up.inUseSlots());
    up.close();
    store = t; // closed again by the contract's @AfterEach: idempotent
  }
}
