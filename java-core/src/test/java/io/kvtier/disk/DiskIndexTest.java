package io.kvtier.disk;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.key.ChunkKey;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The disk tier's bookkeeping alone: budget, reservations, LRU order, pins; no files. */
class DiskIndexTest {
  static final long FILE = 100;

  final DiskIndex index = new DiskIndex(4 * FILE);

  static ChunkKey key(int i) {
    return new ChunkKey(1, i, i);
  }

  static Path path(int i) {
    return Path.of("/chunks/" + i + ".kvc");
  }

  static DiskIndex.Entry entry(int i) {
    return new DiskIndex.Entry(path(i), 10L * i, FILE);
  }

  /** Reserves and commits file {@code i}, as a successful write does; returns what it evicted. */
  List<Path> store(int i) {
    List<Path> evicted = new ArrayList<>();
    assertTrue(index.reserve(FILE, evicted), "reserve " + i);
    index.commit(key(i), entry(i));
    return evicted;
  }

  @Test
  void constructor_nonPositiveBudget_throwsNamingIt() {
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> new DiskIndex(0));
    assertTrue(e.getMessage().contains("budgetBytes"), e.getMessage());
  }

  @Test
  void reserve_withinBudget_evictsNothing_andCountsTheReservation() {
    List<Path> evicted = new ArrayList<>();
    assertTrue(index.reserve(FILE, evicted));
    assertTrue(evicted.isEmpty());
    assertEquals(FILE, index.usedBytes(), "a reservation counts before the file exists");
    assertEquals(0, index.size());
    assertFalse(index.contains(key(1)), "nothing is visible before commit");
  }

  @Test
  void commit_makesTheEntryVisible() {
    store(1);
    assertTrue(index.contains(key(1)));
    assertEquals(1, index.size());
    assertEquals(FILE, index.usedBytes());
  }

  @Test
  void cancel_givesTheReservationBack() {
    List<Path> evicted = new ArrayList<>();
    assertTrue(index.reserve(FILE, evicted));
    index.cancel(FILE);
    assertEquals(0, index.usedBytes());
    assertEquals(0, index.size());
  }

  @Test
  void reserve_overBudget_evictsLeastRecentlyUsedFirst() {
    for (int i = 0; i < 4; i++) {
      assertTrue(store(i).isEmpty());
    }
    DiskIndex.Entry e0 = index.acquire(key(0)); // 0 becomes most recently used; 1 is the eldest
    index.release(e0);
    assertEquals(List.of(path(1)), store(4));
    assertEquals(List.of(path(2)), store(5));
    assertTrue(index.contains(key(0)));
    assertFalse(index.contains(key(1)));
    assertEquals(4 * FILE, index.usedBytes(), "never above the budget");
  }

  @Test
  void reserve_skipsPinnedEntries_andAcquiredOnes() {
    for (int i = 0; i < 4; i++) {
      store(i);
    }
    assertTrue(index.pin(key(0)));
    DiskIndex.Entry reading = index.acquire(key(1));
    List<Path> evicted = new ArrayList<>();
    assertTrue(index.reserve(FILE, evicted));
    assertEquals(List.of(path(2)), evicted, "0 is pinned, 1 is being read");
    index.release(reading);
    index.unpin(key(0));
  }

  @Test
  void reserve_whenEverythingIsPinned_fails_andReservesNothing() {
    for (int i = 0; i < 4; i++) {
      store(i);
      assertTrue(index.pin(key(i)));
    }
    List<Path> evicted = new ArrayList<>();
    assertFalse(index.reserve(FILE, evicted));
    assertTrue(evicted.isEmpty());
    assertEquals(4 * FILE, index.usedBytes());
    index.unpin(key(2));
    assertTrue(index.reserve(FILE, evicted), "an unpinned entry can go now");
    assertEquals(List.of(path(2)), evicted);
  }

  @Test
  void reserve_largerThanTheBudget_fails() {
    assertFalse(index.reserve(5 * FILE, new ArrayList<>()));
    assertEquals(0, index.usedBytes());
  }

  @Test
  void pin_absentKey_isFalse_andUnpinNeverGoesNegative() {
    assertFalse(index.pin(key(9)));
    store(1);
    index.unpin(key(1)); // not pinned: stays at zero
    index.unpin(key(9)); // absent: nothing happens
    DiskIndex.Entry e = index.acquire(key(1));
    assertEquals(1, e.pins.get());
    index.release(e);
    assertEquals(0, e.pins.get());
  }

  @Test
  void acquire_absentKey_isNull() {
    assertNull(index.acquire(key(3)));
  }

  @Test
  void removeExpected_onlyRemovesThatEntry() {
    store(1);
    DiskIndex.Entry stale = new DiskIndex.Entry(path(1), 10, FILE);
    assertFalse(index.remove(key(1), stale), "an entry written since is not dropped");
    assertTrue(index.contains(key(1)));
    DiskIndex.Entry current = index.acquire(key(1));
    index.release(current);
    assertTrue(index.remove(key(1), current));
    assertFalse(index.contains(key(1)));
    assertEquals(0, index.usedBytes());
  }

  @Test
  void remove_returnsTheEntry_evenIfPinned() {
    store(1);
    index.pin(key(1));
    DiskIndex.Entry e = index.remove(key(1));
    assertNotNull(e);
    assertEquals(path(1), e.path);
    assertNull(index.remove(key(1)));
    assertEquals(0, index.usedBytes());
  }

  @Test
  void commit_sameKeyAgain_replacesWithoutCountingTwice() {
    store(1);
    DiskIndex.Entry again = entry(1);
    assertTrue(index.reserve(FILE, new ArrayList<>()));
    index.commit(key(1), again);
    assertEquals(1, index.size());
    assertEquals(FILE, index.usedBytes());
    DiskIndex.Entry got = index.acquire(key(1));
    assertSame(again, got);
    index.release(got);
  }

  @Test
  void load_keepsOldestFirstOrder_andEvictsTheOldestOverBudget() {
    Map<ChunkKey, DiskIndex.Entry> found = new LinkedHashMap<>();
    for (int i = 0; i < 6; i++) {
      found.put(key(i), entry(i));
    }
    List<Path> evicted = new ArrayList<>();
    index.load(found, evicted);
    assertEquals(List.of(path(0), path(1)), evicted);
    assertEquals(List.of(key(2), key(3), key(4), key(5)), index.keys());
    assertEquals(4 * FILE, index.usedBytes());
  }
}
