package io.kvtier.store;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.CachePolicy;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.LeakDetector;
import io.kvtier.memory.MmapAllocator;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * Many threads store, read, pin, remove and evict at random on a small CPU tier; every byte read is
 * checked against the pattern its key implies. Zero mismatches, zero leaked slots.
 */
class StoreStressTest {
  private static final int THREADS = 8;
  private static final int OPS_PER_THREAD = 20_000;
  private static final int KEYS = 256;
  private static final int CHUNK_BYTES = 16 * 1024;
  private static final int CAPACITY_CHUNKS = 48; // far fewer than KEYS: constant eviction

  /** The long at index i of key k's chunk. */
  private static long word(int k, int i) {
    long z = (k * 0x9E3779B97F4A7C15L) ^ (i * 0xBF58476D1CE4E5B9L);
    z = (z ^ (z >>> 31)) * 0x94D049BB133111EBL;
    return z ^ (z >>> 29);
  }

  private static ChunkKey key(int k) {
    return new ChunkKey(7, k, k * 31L);
  }

  @ParameterizedTest
  @EnumSource(CachePolicy.class)
  void randomConcurrentOps_neverReturnWrongBytes_andLeakNothing(CachePolicy policy)
      throws Exception {
    long leaksBefore = LeakDetector.leakCount();
    ChunkPool pool =
        new ChunkPool(
            MmapAllocator.INSTANCE, CHUNK_BYTES, (long) CAPACITY_CHUNKS * 4096 * 4, 1 << 20);
    CpuStore store = new CpuStore(pool, (long) CAPACITY_CHUNKS * CHUNK_BYTES, policy);
    AtomicLong mismatches = new AtomicLong();
    AtomicLong hits = new AtomicLong();
    AtomicLong drops = new AtomicLong();
    ExecutorService threads = Executors.newFixedThreadPool(THREADS);
    List<Future<?>> done = new ArrayList<>();
    for (int t = 0; t < THREADS; t++) {
      long seed = t;
      done.add(
          threads.submit(
              () -> {
                SplittableRandom r = new SplittableRandom(seed);
                for (int op = 0; op < OPS_PER_THREAD; op++) {
                  int k = r.nextInt(KEYS);
                  int choice = r.nextInt(100);
                  if (choice < 40) {
                    ChunkBuffer b = store.allocate(CHUNK_BYTES);
                    if (b == null) {
                      drops.incrementAndGet();
                      continue;
                    }
                    MemorySegment s = b.segment();
                    for (int i = 0; i < CHUNK_BYTES / 8; i++) {
                      s.setAtIndex(ValueLayout.JAVA_LONG, i, word(k, i));
                    }
                    store.put(key(k), b);
                    b.release();
                  } else if (choice < 85) {
                    ChunkBuffer b = store.get(key(k));
                    if (b != null) {
                      hits.incrementAndGet();
                      MemorySegment s = b.segment();
                      for (int i = 0; i < CHUNK_BYTES / 8; i++) {
                        if (s.getAtIndex(ValueLayout.JAVA_LONG, i) != word(k, i)) {
                          mismatches.incrementAndGet();
                          break;
                        }
                      }
                      b.release();
                    }
                  } else if (choice < 93) {
                    if (store.pin(key(k))) {
                      Thread.onSpinWait();
                      store.unpin(key(k));
                    }
                  } else {
                    store.remove(key(k));
                  }
                }
                return null;
              }));
    }
    for (Future<?> f : done) {
      f.get(120, TimeUnit.SECONDS);
    }
    threads.shutdown();
    StoreStats stats = store.stats();
    store.close();

    assertEquals(0, mismatches.get(), "bytes read differ from bytes stored");
    assertTrue(hits.get() > 1000, "the test must actually read: " + hits.get() + " hits");
    assertTrue(stats.evictions() > 100, "the test must actually evict: " + stats);
    // The leak check: a slot goes back to the pool on its buffer's last release (which also
    // closes the buffer's leak tracker), and a second release throws; no slot in use means every
    // buffer was released exactly once. No garbage collection needs to be waited for.
    assertEquals(0, pool.inUseSlots(), "slots leaked: " + pool.inUseSlots());
    pool.close();
    assertEquals(leaksBefore, LeakDetector.leakCount(), LeakDetector.recentLeaks().toString());
  }
}
