package io.kvtier.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.key.ChunkKey;
import java.util.List;
import org.junit.jupiter.api.Test;

class BlockIndexTest {
  static final long NS = 7;

  /** Prefix hashes of a chunk whose first {@code shared} blocks are {@code 1, 2, ...}. */
  static long[] prefixes(int blocks, int shared, long tag) {
    long[] p = new long[2 * blocks];
    for (int k = 0; k < blocks; k++) {
      p[2 * k] = k < shared ? k + 1 : tag * 1000 + k;
      p[2 * k + 1] = ~p[2 * k];
    }
    return p;
  }

  static ChunkKey key(long tag) {
    return new ChunkKey(NS, tag, -tag);
  }

  @Test
  void matchesAreTheChunksSharingTheFirstBlock_mostSharedFirst_cappedAtWhatWasAsked() {
    BlockIndex index = new BlockIndex(100);
    index.record(key(1), prefixes(16, 3, 1));
    index.record(key(2), prefixes(16, 9, 2));
    index.record(key(3), prefixes(16, 0, 3)); // another first block
    List<BlockIndex.Match> m = index.matches(NS, prefixes(12, 12, 9), 10);
    assertEquals(List.of(new BlockIndex.Match(key(2), 9), new BlockIndex.Match(key(1), 3)), m);
    assertEquals(
        List.of(new BlockIndex.Match(key(2), 5)),
        index.matches(NS, prefixes(12, 12, 9), 5).subList(0, 1));
    assertTrue(index.matches(NS + 1, prefixes(12, 12, 9), 10).isEmpty(), "another namespace");
    assertTrue(index.matches(NS, prefixes(12, 0, 8), 10).isEmpty(), "no shared first block");
  }

  @Test
  void recordingTheSameChunkTwiceKeepsOneEntry_andForgetDropsIt() {
    BlockIndex index = new BlockIndex(100);
    index.record(key(1), prefixes(16, 16, 1));
    index.record(key(1), prefixes(16, 16, 1));
    assertEquals(1, index.size());
    index.forget(NS, prefixes(2, 2, 0), key(1));
    assertEquals(0, index.size());
    assertTrue(index.matches(NS, prefixes(4, 4, 0), 4).isEmpty());
  }

  @Test
  void oneFirstBlockKeepsItsNewestCandidates() {
    BlockIndex index = new BlockIndex(100);
    for (int i = 1; i <= BlockIndex.MAX_CANDIDATES + 3; i++) {
      index.record(key(i), prefixes(16, 2, i));
    }
    List<BlockIndex.Match> m = index.matches(NS, prefixes(4, 4, 0), 4);
    assertEquals(BlockIndex.MAX_CANDIDATES, m.size());
    assertTrue(m.stream().noneMatch(x -> x.source().equals(key(1))), "the oldest went first");
  }

  @Test
  void theOldestChunksAreForgottenBeyondTheLimit_andClearForgetsAll() {
    BlockIndex index = new BlockIndex(40);
    for (int i = 1; i <= 100; i++) {
      index.record(key(i), prefixes(4, 0, i)); // each under its own first block
    }
    assertEquals(40, index.size());
    assertTrue(index.matches(NS, prefixes(4, 0, 60), 4).isEmpty(), "forgotten");
    assertEquals(4, index.matches(NS, prefixes(4, 0, 61), 4).getFirst().blocks());
    index.clear();
    assertEquals(0, index.size());
    index.record(key(5), prefixes(4, 0, 5));
    assertEquals(1, index.size());
  }

  @Test
  void aSingleBlockChunkIsNotRecorded() {
    BlockIndex index = new BlockIndex(10);
    index.record(key(1), prefixes(1, 1, 1));
    assertEquals(0, index.size());
  }
}
