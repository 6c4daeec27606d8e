package io.kvtier.memory;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Values of any size under one budget: classes, rounding, and memory moving between classes. */
class SizeClassPoolsTest {
  static final long PAGE = ChunkPool.PAGE_BYTES;
  static final long MIB = 1 << 20;

  @Test
  void classesArePagesThenSixteenStepsPerDoubling_losingAtMostASixteenth() {
    assertEquals(PAGE, SizeClassPools.classOf(0));
    assertEquals(PAGE, SizeClassPools.classOf(1));
    assertEquals(16 * PAGE, SizeClassPools.classOf(16 * PAGE));
    assertEquals(18 * PAGE, SizeClassPools.classOf(17 * PAGE + 1));
    assertEquals(32 * MIB, SizeClassPools.classOf(32 * MIB));
    assertEquals(3 * MIB, SizeClassPools.classOf(3 * MIB));
    long previous = 0;
    for (long n = 1; n < 80 * MIB; n += 12_345) {
      long c = SizeClassPools.classOf(n);
      assertTrue(c >= n && c % PAGE == 0, "class " + c + " of " + n);
      long pages = (n + PAGE - 1) / PAGE * PAGE;
      assertTrue(c - pages <= pages / 16, "rounding of " + n + " to " + c);
      assertTrue(c >= previous, "classes grow with the size");
      previous = c;
    }
  }

  @Test
  void manySmallValues_fillTheBudget_notOneSlotOfTheLargestEach() {
    long budget = 64 * MIB;
    try (SizeClassPools pools = new SizeClassPools(MmapAllocator.INSTANCE, budget, 64 * MIB)) {
      List<ChunkBuffer> held = new ArrayList<>();
      ChunkBuffer b;
      while ((b = pools.tryAllocate(512 * 1024)) != null) {
        b.segment().set(ValueLayout.JAVA_BYTE, 0, (byte) held.size());
        held.add(b);
      }
      assertEquals(128, held.size(), "64 MiB hold 128 values of 512 KiB");
      assertEquals(budget, pools.mappedBytes());
      assertTrue(pools.owns(held.get(0)));
      held.forEach(ChunkBuffer::release);
    }
  }

  @Test
  void memoryFreedInOneClass_servesAnother_onceTheBudgetIsSpent() {
    long budget = 16 * MIB;
    try (SizeClassPools pools = new SizeClassPools(MmapAllocator.INSTANCE, budget, 8 * MIB)) {
      List<ChunkBuffer> small = new ArrayList<>();
      ChunkBuffer b;
      while ((b = pools.tryAllocate(MIB)) != null) {
        small.add(b);
      }
      assertEquals(16, small.size());
      assertNull(pools.tryAllocate(3 * MIB), "nothing free: the caller must evict");
      small.remove(0).release();
      small.remove(0).release();
      assertNull(pools.tryAllocate(3 * MIB), "2 MiB free are not 3 MiB");
      small.remove(0).release();
      ChunkBuffer large = pools.tryAllocate(3 * MIB);
      assertNotNull(large, "three free 1 MiB slots unmapped for one 3 MiB value");
      assertEquals(3 * MIB, large.capacity());
      assertEquals(budget, pools.mappedBytes());
      assertEquals(2, pools.classes());
      large.release();
      small.forEach(ChunkBuffer::release);
    }
  }

  @Test
  void badSizesAreRefused() {
    assertThrows(
        IllegalArgumentException.class,
        () -> new SizeClassPools(MmapAllocator.INSTANCE, MIB, 2 * MIB),
        "a largest value above the budget");
    try (SizeClassPools pools = new SizeClassPools(MmapAllocator.INSTANCE, 4 * MIB, MIB)) {
      assertThrows(IllegalArgumentException.class, () -> pools.tryAllocate(MIB + 1));
      assertThrows(IllegalArgumentException.class, () -> pools.tryAllocate(-1));
      ChunkBuffer other;
      try (ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, MIB, 2 * MIB, MIB)) {
        other = pool.tryAllocate(MIB);
        assertFalse(pools.owns(other), "a buffer of another pool of the same size");
        other.release();
      }
    }
  }

  @Test
  void trimFree_givesBudgetBack_andTheSlotIsMappedAgainOnDemand() {
    MemoryBudget budget = new MemoryBudget(4 * MIB);
    try (ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, MIB, 4 * MIB, MIB, budget)) {
      ChunkBuffer a = pool.tryAllocate(MIB);
      ChunkBuffer c = pool.tryAllocate(MIB);
      a.release();
      assertEquals(2 * MIB, budget.usedBytes());
      assertEquals(MIB, pool.trimFree());
      assertEquals(MIB, budget.usedBytes());
      assertEquals(MIB, pool.mappedBytes());
      ChunkBuffer again = pool.tryAllocate(MIB);
      again.segment().fill((byte) 7);
      assertEquals(2 * MIB, budget.usedBytes());
      again.release();
      c.release();
    }
    assertEquals(0, budget.usedBytes(), "a closed pool gives everything back");
  }
}
