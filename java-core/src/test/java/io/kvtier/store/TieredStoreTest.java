package io.kvtier.store;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.CachePolicy;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.testing.Await;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
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
  void readOnlyLowerTier_isReadButNeverWritten() throws Exception {
    ChunkPool up = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 4L * CHUNK_BYTES, 1 << 20);
    ChunkPool shared =
        new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 4L * CHUNK_BYTES, 1 << 20);
    CpuStore written = new CpuStore(shared, 4L * CHUNK_BYTES, CachePolicy.LRU);
    ChunkBuffer other = chunk(7, CHUNK_BYTES); // what another process wrote
    byte[] expected = bytesOf(other);
    written.put(key(7), other);
    other.release();
    TieredStore tiered =
        new TieredStore(
            new CpuStore(up, 4L * CHUNK_BYTES, CachePolicy.LRU),
            List.of(new ReadOnlyTier(written)),
            1,
            4);
    try {
      ChunkBuffer mine = chunk(1, CHUNK_BYTES);
      assertTrue(tiered.put(key(1), mine));
      mine.release();
      assertTrue(tiered.awaitIdle(60_000));
      assertFalse(written.contains(key(1)), "a read-only tier is never written");
      assertEquals(0, tiered.copyDownFailed());
      ChunkBuffer got = tiered.get(key(7));
      assertNotNull(got, "a read-only tier is read");
      assertArrayEquals(expected, bytesOf(got));
      got.release();
    } finally {
      tiered.close();
      assertEquals(0, up.inUseSlots());
      assertEquals(0, shared.inUseSlots());
      up.close();
      shared.close();
    }
  }

  @Test
  void aChunkTheDiskCannotDeliver_comesFromTheTierBelow() throws Exception {
    ChunkPool up = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 8L * CHUNK_BYTES, 1 << 20);
    ChunkPool below = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 8L * CHUNK_BYTES, 1 << 20);
    CpuStore diskLike = new CpuStore(below, 4L * CHUNK_BYTES, CachePolicy.LRU);
    CpuStore remoteLike = new CpuStore(below, 4L * CHUNK_BYTES, CachePolicy.LRU);
    byte[][] expected = new byte[3][];
    for (int i = 0; i < 3; i++) {
      ChunkBuffer b = chunk(i, CHUNK_BYTES);
      expected[i] = bytesOf(b);
      diskLike.put(key(i), b);
      remoteLike.put(key(i), b);
      b.release();
    }
    KvStore corrupt = // holds chunk 1 by its index, but its file no longer checks out
        new ForwardingTier(diskLike) {
          @Override
          public ChunkBuffer[] getBatch(ChunkKey[] keys) {
            ChunkBuffer[] out = tier.getBatch(keys);
            for (int i = 0; i < keys.length; i++) {
              if (keys[i].equals(key(1)) && out[i] != null) {
                out[i].release();
                out[i] = null;
              }
            }
            return out;
          }
        };
    TieredStore tiered =
        new TieredStore(
            new CpuStore(up, 8L * CHUNK_BYTES, CachePolicy.LRU),
            List.of(corrupt, remoteLike),
            1,
            4);
    try {
      ChunkBuffer[] got = tiered.getPrefix(new ChunkKey[] {key(0), key(1), key(2)});
      assertEquals(3, got.length, "chunks 1 and 2 came from the tier below");
      for (int i = 0; i < 3; i++) {
        assertArrayEquals(expected[i], bytesOf(got[i]));
        got[i].release();
      }
    } finally {
      tiered.close();
      assertEquals(0, up.inUseSlots());
      assertEquals(0, below.inUseSlots());
      up.close();
      below.close();
    }
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
            return StoreStats.EMPTY;
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

  /**
   * A lower tier whose puts and gets block until the test lets them go: {@link #putStarted} and
   * {@link #getStarted} count down when a call enters, and the call returns once {@link
   * #releasePuts} (or {@link #releaseGets}) is counted down. With {@code interruptible} false it
   * ignores interrupts, like a write stuck in a system call. Gets return a copy of {@link #value}
   * from {@link #pool}.
   */
  static final class BlockingTier implements KvStore {
    final CountDownLatch putStarted = new CountDownLatch(1);
    final CountDownLatch releasePuts = new CountDownLatch(1);
    final CountDownLatch getStarted = new CountDownLatch(1);
    final CountDownLatch releaseGets = new CountDownLatch(1);
    final AtomicInteger putsDone = new AtomicInteger();
    volatile int putsDoneAtClose = -1;
    private final boolean interruptible;
    private final ChunkPool pool;
    private final byte[] value;

    BlockingTier(boolean interruptible, ChunkPool pool, byte[] value) {
      this.interruptible = interruptible;
      this.pool = pool;
      this.value = value;
    }

    private void await(CountDownLatch latch) {
      boolean interrupted = false;
      try {
        while (true) {
          try {
            latch.await();
            return;
          } catch (InterruptedException e) {
            interrupted = true;
            if (interruptible) {
              return;
            }
          }
        }
      } finally {
        if (interrupted) {
          Thread.currentThread().interrupt();
        }
      }
    }

    @Override
    public boolean contains(ChunkKey key) {
      return true;
    }

    @Override
    public boolean put(ChunkKey key, ChunkBuffer chunk) {
      putStarted.countDown();
      await(releasePuts);
      putsDone.incrementAndGet();
      return true;
    }

    @Override
    public ChunkBuffer get(ChunkKey key) {
      getStarted.countDown();
      await(releaseGets);
      ChunkBuffer b = pool.tryAllocate(value.length);
      MemorySegment.copy(value, 0, b.segment(), ValueLayout.JAVA_BYTE, 0, value.length);
      return b;
    }

    @Override
    public boolean pin(ChunkKey key) {
      return false;
    }

    @Override
    public void unpin(ChunkKey key) {}

    @Override
    public boolean remove(ChunkKey key) {
      return false;
    }

    @Override
    public StoreStats stats() {
      return StoreStats.EMPTY;
    }

    @Override
    public void close() {
      putsDoneAtClose = putsDone.get();
    }
  }

  /** Runs {@code task} on a thread of its own (the common pool may have a single thread). */
  private static <T> CompletableFuture<T> onNewThread(Callable<T> task) {
    CompletableFuture<T> f = new CompletableFuture<>();
    Thread.ofPlatform()
        .daemon()
        .start(
            () -> {
              try {
                f.complete(task.call());
              } catch (Throwable e) {
                f.completeExceptionally(e);
              }
            });
    return f;
  }

  /**
   * Closes {@code t} on a new thread and returns once close has begun (the store refuses calls).
   */
  private static CompletableFuture<Object> startClosing(TieredStore t) throws Exception {
    CompletableFuture<Object> closing =
        onNewThread(
            () -> {
              t.close();
              return null;
            });
    Await.until(
        "close has begun (the store refuses calls)",
        () -> {
          try {
            t.containsLocally(key(0));
            return false;
          } catch (IllegalStateException closed) {
            return true;
          }
        });
    return closing;
  }

  /**
   * A buffer of {@code pool} holding {@code length} bytes from {@code seed}, as the engine puts.
   */
  private static ChunkBuffer chunkIn(ChunkPool pool, long seed, int length) {
    ChunkBuffer b = pool.tryAllocate(length);
    byte[] bytes = new byte[length];
    new java.util.Random(seed).nextBytes(bytes);
    MemorySegment.copy(bytes, 0, b.segment(), ValueLayout.JAVA_BYTE, 0, length);
    return b;
  }

  /**
   * One copy-down worker stuck in a lower tier that ignores interrupts, four more copies queued
   * behind it: close gives up on them after its wait, and must still release the four queued
   * chunks; the stuck one is released when its write returns, and only then is the pool unmapped.
   */
  @Test
  void close_lowerTierWriteOutlastsCloseWait_releasesEverySlotAndPoolUnmaps() throws Exception {
    store.close();
    ChunkPool up = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 8L * CHUNK_BYTES, 1 << 20);
    BlockingTier slow = new BlockingTier(false, up, new byte[0]);
    TieredStore t =
        new TieredStore(
            new CpuStore(up, 8L * CHUNK_BYTES, CachePolicy.LRU), List.of(slow), 1, 4, true, 100);
    for (int i = 0; i < 5; i++) {
      ChunkBuffer b = chunkIn(up, i, 100); // from the CPU tier's pool, as the engine stores
      t.put(key(i), b);
      b.release();
    }
    assertTrue(slow.putStarted.await(30, TimeUnit.SECONDS), "the first copy-down never started");

    t.close();
    assertEquals(4, t.copyDownDropped(), "the 4 queued copies are dropped");
    assertEquals(
        1, up.inUseSlots(), "only the chunk of the copy still running in the lower tier is held");
    up.close();

    Thread.ofPlatform().start(slow.releasePuts::countDown); // the stuck write returns
    Await.until("the pool's last slot is released", () -> up.inUseSlots() == 0);
    Await.until("the pool is unmapped", () -> up.mappedBytes() == 0);
    store = t; // closed again by the contract's @AfterEach: idempotent
  }

  /**
   * Close starts while a lower-tier write is blocked and the next copies wait behind it; the write
   * is let go from another thread once close has begun: close waits for every copy, closes the
   * lower tier only after them, and leaves nothing held, so the pool unmaps at once.
   */
  @Test
  void close_whileLowerTierWrites_waitsForCopiesThenClosesTiers() throws Exception {
    store.close();
    ChunkPool up = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 8L * CHUNK_BYTES, 1 << 20);
    BlockingTier slow = new BlockingTier(true, up, new byte[0]);
    TieredStore t =
        new TieredStore(new CpuStore(up, 8L * CHUNK_BYTES, CachePolicy.LRU), List.of(slow), 1, 4);
    for (int i = 0; i < 5; i++) {
      ChunkBuffer b = chunkIn(up, i, 100); // from the CPU tier's pool, as the engine stores
      t.put(key(i), b);
      b.release();
    }
    assertTrue(slow.putStarted.await(30, TimeUnit.SECONDS), "the first copy-down never started");

    CompletableFuture<Object> closing = startClosing(t);
    slow.releasePuts.countDown();
    closing.get(60, TimeUnit.SECONDS);

    assertEquals(5, slow.putsDone.get(), "every queued copy reached the lower tier");
    assertEquals(5, slow.putsDoneAtClose, "the lower tier is closed after its writes");
    assertEquals(0, t.copyDownDropped());
    assertEquals(0, up.inUseSlots());
    up.close();
    assertEquals(0, up.mappedBytes(), "nothing held: the pool unmaps when closed");
    store = t;
  }

  /**
   * A get that misses the CPU tier is reading from a lower tier when close starts: close waits for
   * it, the promotion lands before the CPU tier is emptied, and the caller's buffer and the CPU
   * tier's copy are both released.
   */
  @Test
  void close_duringLowerTierGet_waitsForPromotionAndLeavesNothingHeld() throws Exception {
    store.close();
    ChunkPool up = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 8L * CHUNK_BYTES, 1 << 20);
    ChunkPool low = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 8L * CHUNK_BYTES, 1 << 20);
    byte[] value = new byte[1000];
    new java.util.Random(3).nextBytes(value);
    BlockingTier slow = new BlockingTier(true, low, value);
    slow.releasePuts.countDown();
    TieredStore t =
        new TieredStore(new CpuStore(up, 8L * CHUNK_BYTES, CachePolicy.LRU), List.of(slow), 1, 4);

    CompletableFuture<ChunkBuffer> getting = onNewThread(() -> t.get(key(7)));
    assertTrue(slow.getStarted.await(30, TimeUnit.SECONDS), "the lower-tier get never started");
    CompletableFuture<Object> closing = startClosing(t);
    slow.releaseGets.countDown();
    ChunkBuffer got = getting.get(60, TimeUnit.SECONDS);
    closing.get(60, TimeUnit.SECONDS);

    assertArrayEquals(value, bytesOf(got));
    got.release();
    assertEquals(0, up.inUseSlots(), "the promoted copy is released by close");
    assertEquals(0, low.inUseSlots(), "the lower tier's buffer is released");
    up.close();
    low.close();
    assertEquals(0, up.mappedBytes());
    assertEquals(0, low.mappedBytes());
    store = t;
  }
}
