package io.kvtier.memory;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.testing.Await;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

class ChunkPoolTest {
  /** Counts what reaches the real allocator. */
  static final class CountingAllocator implements HostAllocator {
    final AtomicInteger allocations = new AtomicInteger();
    final AtomicInteger frees = new AtomicInteger();
    final AtomicInteger prefaults = new AtomicInteger();

    @Override
    public void prefault(MemorySegment segment) {
      MmapAllocator.INSTANCE.prefault(segment);
      prefaults.incrementAndGet();
    }

    @Override
    public MemorySegment allocate(long byteCount) {
      allocations.incrementAndGet();
      return MmapAllocator.INSTANCE.allocate(byteCount);
    }

    @Override
    public void free(MemorySegment segment) {
      frees.incrementAndGet();
      MmapAllocator.INSTANCE.free(segment);
    }

    @Override
    public String name() {
      return "counting-mmap";
    }
  }

  @Test
  void newPool_mapsNothingUntilFirstAllocation_evenWhenHuge() {
    CountingAllocator a = new CountingAllocator();
    long t0 = System.nanoTime();
    try (ChunkPool pool = new ChunkPool(a, 32L << 20, 1L << 40, 1L << 30)) { // 1 TiB budget
      assertEquals(0, a.allocations.get());
      assertEquals(0, pool.mappedBytes());
      ChunkBuffer b = pool.tryAllocate(32L << 20);
      assertEquals(1, a.allocations.get());
      assertEquals(1L << 30, pool.mappedBytes(), "one slab, untouched");
      b.release();
    }
    assertTrue(System.nanoTime() - t0 < 5_000_000_000L);
  }

  @Test
  void everyNewSlab_isPrefaultedInTheBackground_withoutDisturbingWrites() throws Exception {
    CountingAllocator a = new CountingAllocator();
    try (ChunkPool pool = new ChunkPool(a, 1 << 20, 64L << 20, 16L << 20)) {
      pool.warmUp();
      assertEquals(1, a.allocations.get(), "warmUp maps the first slab");
      List<ChunkBuffer> held = new ArrayList<>();
      for (int i = 0; i < 40; i++) { // spills into 3 slabs while prefaulting runs
        ChunkBuffer b = pool.tryAllocate(1 << 20);
        b.segment().fill((byte) (i + 1));
        held.add(b);
      }
      assertEquals(3, a.allocations.get(), "40 MiB of slots in 16 MiB slabs");
      assertTrue(ChunkPool.awaitPrefaulted(60_000), "the prefault thread is stuck");
      assertEquals(3, a.prefaults.get(), "each slab is prefaulted once");
      for (int i = 0; i < 40; i++) {
        MemorySegment s = held.get(i).segment();
        assertEquals((byte) (i + 1), s.get(ValueLayout.JAVA_BYTE, 0));
        assertEquals((byte) (i + 1), s.get(ValueLayout.JAVA_BYTE, (1 << 20) - 1));
      }
      held.forEach(ChunkBuffer::release);
    }
  }

  @Test
  void slots_arePageAligned_andDisjoint() {
    try (ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, 5000, 10 * 8192, 3 * 8192)) {
      List<ChunkBuffer> held = new ArrayList<>();
      for (int i = 0; i < 10; i++) {
        ChunkBuffer b = pool.tryAllocate(5000);
        assertNotNull(b);
        assertEquals(0, b.address() % ChunkPool.PAGE_BYTES);
        b.segment().fill((byte) i);
        held.add(b);
      }
      for (int i = 0; i < 10; i++) {
        MemorySegment s = held.get(i).segment();
        assertEquals((byte) i, s.get(ValueLayout.JAVA_BYTE, 0));
        assertEquals((byte) i, s.get(ValueLayout.JAVA_BYTE, 4999));
      }
      held.forEach(ChunkBuffer::release);
      assertEquals(0, pool.inUseSlots());
    }
  }

  @Test
  void tryAllocate_whenExhausted_returnsNullAndCounts() {
    try (ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, 4096, 2 * 4096, 4096)) {
      ChunkBuffer a = pool.tryAllocate(10);
      ChunkBuffer b = pool.tryAllocate(10);
      assertNull(pool.tryAllocate(10));
      assertEquals(1, pool.allocationFailures());
      a.release();
      ChunkBuffer c = pool.tryAllocate(10);
      assertNotNull(c, "a freed slot is reused");
      b.release();
      c.release();
    }
  }

  @Test
  void tryAllocate_lengthAboveSlot_throwsNamingBoth() {
    try (ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, 4096, 8192, 4096)) {
      IllegalArgumentException e =
          assertThrows(IllegalArgumentException.class, () -> pool.tryAllocate(4097));
      assertEquals("length 4097 is outside [0, 4096] of this pool's slots", e.getMessage());
    }
  }

  @Test
  void constructor_capacityBelowOneSlot_throws() {
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () -> new ChunkPool(MmapAllocator.INSTANCE, 1 << 20, 1000, 1 << 20));
    assertTrue(e.getMessage().contains("holds no slot"), e.getMessage());
  }

  @Test
  void refCounting_lastReleaseFreesSlot_andUseAfterReleaseThrows() {
    try (ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, 4096, 4096, 4096)) {
      ChunkBuffer b = pool.tryAllocate(100);
      b.retain();
      assertFalse(b.release());
      assertEquals(1, pool.inUseSlots());
      assertTrue(b.release());
      assertEquals(0, pool.inUseSlots());
      assertThrows(IllegalStateException.class, b::segment);
      assertThrows(IllegalStateException.class, b::release);
      assertThrows(IllegalStateException.class, b::retain);
      assertFalse(b.tryRetain());
    }
  }

  @Test
  void close_withBufferHeld_unmapsOnlyAfterLastRelease() {
    CountingAllocator a = new CountingAllocator();
    ChunkPool pool = new ChunkPool(a, 4096, 4 * 4096, 4 * 4096);
    ChunkBuffer b = pool.tryAllocate(4096);
    pool.close();
    assertThrows(IllegalStateException.class, () -> pool.tryAllocate(1));
    b.segment().fill((byte) 7); // still mapped: a reader is never left with unmapped memory
    assertEquals(0, a.frees.get());
    b.release();
    assertEquals(1, a.frees.get());
  }

  @Test
  @LeaksOnPurpose
  void leakDetector_reportsBufferCollectedWithoutRelease() throws Exception {
    assertEquals(LeakDetector.Level.PARANOID, LeakDetector.level(), "tests run paranoid");
    ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, 4096, 4096, 4096);
    long before = LeakDetector.leakCount();
    leakOne(pool);
    // When the collector finds the buffer unreachable is up to it: ask again until it reports.
    Await.until(
        "the leaked buffer to be collected and reported",
        () -> {
          System.gc();
          return LeakDetector.leakCount() > before;
        });
    assertEquals(before + 1, LeakDetector.leakCount());
    String report = LeakDetector.recentLeaks().getLast();
    assertTrue(report.contains("leakOne"), "paranoid reports name the allocation site: " + report);
  }

  @Test
  void close_withSlotHeld_isReportedUntilReleased_andFailsTheLeakCheck() throws Exception {
    ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, 4096, 4 * 4096, 4 * 4096);
    ChunkBuffer held = holdOne(pool);
    LeakCheck.Mark mark = LeakCheck.mark();
    pool.close();

    List<String> reports = LeakDetector.poolsHeldAfterClose(mark.poolsClosedWithHeldSlots());
    assertEquals(1, reports.size(), reports.toString());
    assertTrue(reports.get(0).contains("closed with 1 slots held"), reports.get(0));
    assertTrue(reports.get(0).contains("holdOne"), "names the allocation site: " + reports.get(0));
    AssertionError e =
        assertThrows(AssertionError.class, () -> LeakCheck.assertNoLeaksSince(mark, 50, false));
    assertTrue(e.getMessage().contains("closed with 1 slots held"), e.getMessage());

    held.release();
    assertEquals(List.of(), LeakDetector.poolsHeldAfterClose(mark.poolsClosedWithHeldSlots()));
    assertEquals(0, pool.mappedBytes(), "the last release unmaps the closed pool");
    LeakCheck.assertNoLeaksSince(mark, 0, false);
  }

  @Test
  void close_withNothingHeld_reportsNothing() throws Exception {
    ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, 4096, 4 * 4096, 4 * 4096);
    pool.tryAllocate(10).release();
    LeakCheck.Mark mark = LeakCheck.mark();
    pool.close();
    assertEquals(mark, LeakCheck.mark());
    assertEquals(0, pool.mappedBytes());
  }

  private static ChunkBuffer holdOne(ChunkPool pool) {
    return pool.tryAllocate(1);
  }

  private static void leakOne(ChunkPool pool) {
    pool.tryAllocate(1); // dropped on purpose
  }

  @Test
  void parseLevel_unknown_throwsNamingAllowed() {
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> LeakDetector.parseLevel("loud"));
    assertTrue(e.getMessage().contains("disabled, simple, paranoid"));
  }
}
