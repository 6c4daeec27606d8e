package io.kvtier.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.KvTierConfig;
import io.kvtier.key.ChunkKey;
import io.kvtier.key.KeyExtras;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.store.KvStore.Medium;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** KV events: what each tier announces, once, with the worker's tags. */
class ChunkEventsTest {
  record Event(int kind, Medium medium, long[] tag) {
    @Override
    public String toString() {
      return (kind == ChunkEvents.STORED ? "stored " : "removed ") + medium + " " + tag[0];
    }
  }

  static List<Event> drain(ChunkEvents events) {
    long[] packed = events.drain();
    List<Event> out = new ArrayList<>();
    for (int at = 0; at < packed.length; ) {
      long head = packed[at];
      int length = (int) (head & 0xFFFF);
      long[] tag = java.util.Arrays.copyOfRange(packed, at + 1, at + 1 + length);
      out.add(new Event((int) (head >>> 32), Medium.values()[(int) (head >>> 16 & 0xFFFF)], tag));
      at += 1 + length;
    }
    return out;
  }

  static ChunkKey key(int i) {
    return new ChunkKey(1, i, i);
  }

  @Test
  void eachTierAnnouncesATaggedChunkOnce_andItsRemovalAfterIt() {
    ChunkEvents events = new ChunkEvents(100, 10);
    events.stored(key(9), Medium.MEMORY); // never tagged: not announced
    events.tag(key(1), new long[] {11, 12, 13});
    events.tag(key(1), new long[] {99}); // the first tag stays
    events.removed(key(1), Medium.MEMORY); // not stored yet: nothing to remove
    events.stored(key(1), Medium.MEMORY);
    events.stored(key(1), Medium.MEMORY); // again: already announced
    events.stored(key(1), Medium.DISK);
    events.removed(key(1), Medium.MEMORY);
    events.removed(key(1), Medium.MEMORY);
    events.removed(key(1), Medium.DISK);
    List<Event> got = drain(events);
    assertEquals(
        List.of("stored MEMORY 11", "stored DISK 11", "removed MEMORY 11", "removed DISK 11"),
        got.stream().map(Event::toString).toList());
    assertArrayEquals(new long[] {11, 12, 13}, got.get(0).tag());
    assertEquals(0, drain(events).size(), "drained twice");
  }

  @Test
  void aChunkNoTierHolds_keepsItsTagAWhile_thenLosesIt() {
    ChunkEvents events = new ChunkEvents(100, 2);
    events.tag(key(1), new long[] {1});
    events.stored(key(1), Medium.MEMORY);
    events.removed(key(1), Medium.MEMORY); // evicted before its copy to disk landed
    events.stored(key(1), Medium.DISK); // still announced
    events.tag(key(2), new long[] {2});
    events.tag(key(3), new long[] {3});
    events.tag(key(4), new long[] {4}); // key 2 is the oldest unheld tag: dropped
    events.stored(key(2), Medium.MEMORY);
    events.stored(key(4), Medium.MEMORY);
    assertEquals(
        List.of("stored MEMORY 1", "removed MEMORY 1", "stored DISK 1", "stored MEMORY 4"),
        drain(events).stream().map(Event::toString).toList());
    assertEquals(3, events.tagged()); // 1 (held on disk), 3 (unheld), 4 (held)
  }

  @Test
  void eventsBeyondTheQueueBoundAreDroppedAndCounted() {
    ChunkEvents events = new ChunkEvents(2, 10);
    for (int i = 0; i < 3; i++) {
      events.tag(key(i), new long[] {i});
      events.stored(key(i), Medium.MEMORY);
    }
    assertEquals(2, drain(events).size());
    assertEquals(1, events.dropped());
  }

  @Test
  void anEngine_announcesSavesToMemoryAndDisk_evictions_andAReset(@TempDir Path dir)
      throws Exception {
    int chunk = 16;
    long bytesPerToken = 64;
    Map<String, Object> s = new HashMap<>();
    s.put("chunk_size", chunk);
    s.put("max_local_cpu_size", 2.0 * 4096 / (1L << 30)); // two chunks
    s.put("cache_policy", "LRU");
    s.put("local_disk", dir.toString());
    s.put("max_local_disk_size", 0.01);
    try (KvEngine engine =
        new KvEngine(
            KvTierConfig.of(s), KvEngineTest.ns(chunk), bytesPerToken, MmapAllocator.INSTANCE)) {
      ChunkEvents events = engine.enableEvents(1000, 1000);
      int[] p = new Random(7).ints(3 * chunk, 0, 1000).toArray();
      long[][] tags = {{100}, {101}, {102}};
      // Chunks 0 and 1 fit; chunk 2 evicts chunk 0 from memory (LRU) once they are stored.
      for (int c = 0; c < 3; c++) {
        try (StoreTransaction tx = engine.beginStore(p, (c + 1) * chunk, KeyExtras.NONE, c, tags)) {
          assertEquals(1, tx.commit(), "chunk " + c);
        }
        assertTrue(engine.tiers().awaitIdle(60_000));
      }
      List<String> got = new ArrayList<>(drain(events).stream().map(Event::toString).toList());
      assertTrue(got.contains("stored MEMORY 100"), got.toString());
      assertTrue(got.contains("stored DISK 100"), got.toString());
      assertTrue(got.contains("stored DISK 102"), got.toString());
      assertTrue(got.contains("removed MEMORY 100"), got.toString());
      assertTrue(
          got.indexOf("stored MEMORY 100") < got.indexOf("removed MEMORY 100"), got.toString());
      int[] hit = engine.lookupAndPinTiers(1, p, p.length);
      assertEquals(3 * chunk, hit[0]);
      assertEquals(0, hit[1], "chunk 0 was evicted from memory: no leading part in memory");
      assertEquals(3 * chunk, hit[4], "all of it in this engine's tiers (disk)");
      engine.unpinRequest(1);
      engine.clearLocal();
      assertTrue(engine.tiers().awaitIdle(60_000));
      List<String> cleared = drain(events).stream().map(Event::toString).toList();
      assertTrue(cleared.contains("removed DISK 100"), cleared.toString());
      assertTrue(cleared.contains("removed DISK 101"), cleared.toString());
      assertTrue(cleared.contains("removed MEMORY 102"), cleared.toString());
      assertTrue(cleared.stream().allMatch(e -> e.startsWith("removed")), cleared.toString());
    }
  }
}
