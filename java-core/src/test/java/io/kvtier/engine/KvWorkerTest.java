package io.kvtier.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.KvTierConfig;
import io.kvtier.key.ChunkHasher;
import io.kvtier.key.ChunkKey;
import io.kvtier.key.KeyNamespace;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.transfer.PagedKvCache;
import io.kvtier.transfer.PagedLayout;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.HashMap;
import java.util.Map;
import java.util.Random;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class KvWorkerTest {
  static final int CHUNK = 16;
  static final int LAYERS = 2;
  static final int BLOCKS = 64;
  static final int BLOCK = 8;

  private final Arena arena = Arena.ofShared();
  private final PagedLayout layout = PagedLayout.cpuBackend(BLOCKS, BLOCK, 2, 4, 2);
  private final MemorySegment[] layers = new MemorySegment[LAYERS];
  private KvEngine engine;
  private KvWorker worker;
  private CacheGroups groups; // the next open()'s KV cache groups (null: one full-attention group)
  private boolean aliased; // the next open() gives layer 1 layer 0's memory (two groups' layers)

  KvWorker open(Map<String, ?> settings, PagedLayout l) {
    return open(settings, l, 1);
  }

  KvWorker open(Map<String, ?> settings, PagedLayout l, int copyThreads) {
    Map<String, Object> s = new HashMap<>(Map.of("chunk_size", CHUNK));
    s.putAll(settings);
    for (int i = 0; i < LAYERS; i++) {
      layers[i] = aliased && i > 0 ? layers[0] : arena.allocate(l.tensorBytes(), 64);
      fillRandom(layers[i], 100 + i);
    }
    PagedKvCache cache = new PagedKvCache(layers, l, copyThreads);
    engine =
        new KvEngine(
            KvTierConfig.of(s),
            new KeyNamespace(
                "m", "bfloat16", LAYERS, l.numHeads(), l.headSize(), 1, 0, CHUNK, false),
            cache.tokenBytes(),
            MmapAllocator.INSTANCE);
    worker =
        new KvWorker(engine, cache, 2, groups != null ? groups : CacheGroups.fullAttention(LAYERS));
    return worker;
  }

  KvWorker open() {
    return open(Map.of(), layout);
  }

  @AfterEach
  void close() {
    if (worker != null) {
      worker.close();
    }
    if (engine != null) {
      engine.close();
      assertEquals(0, engine.pool().inUseSlots(), "leaked slots");
    }
    arena.close();
  }

  static void fillRandom(MemorySegment s, long seed) {
    byte[] b = new byte[(int) s.byteSize()];
    new Random(seed).nextBytes(b);
    MemorySegment.copy(b, 0, s, ValueLayout.JAVA_BYTE, 0, b.length);
  }

  static int[] prompt(int n, long seed) {
    return new Random(seed).ints(n, 0, 100_000).toArray();
  }

  /** Block tables: {@code count} distinct blocks from {@code first}, stepping by {@code step}. */
  static int[] blocks(int first, int step, int count) {
    return IntStream.range(0, count).map(i -> (first + i * step) % BLOCKS).toArray();
  }

  /** The bytes of prompt token {@code t} of one layer (every kv and head) under a block table. */
  byte[] token(int layer, PagedLayout l, int[] table, int t) {
    long slot = (long) table[t / l.blockSize()] * l.blockSize() + t % l.blockSize();
    long block = slot / l.blockSize();
    long in = slot % l.blockSize();
    int row = l.headSize() * l.elementBytes();
    byte[] out = new byte[l.kvCount() * l.numHeads() * row];
    int o = 0;
    for (int kv = 0; kv < l.kvCount(); kv++) {
      for (int h = 0; h < l.numHeads(); h++) {
        long e =
            kv * l.kvStride() + block * l.blockStride() + in * l.slotStride() + h * l.headStride();
        MemorySegment.copy(layers[layer], ValueLayout.JAVA_BYTE, e * l.elementBytes(), out, o, row);
        o += row;
      }
    }
    return out;
  }

  void assertSameTokens(PagedLayout l, int[] a, int[] b, int from, int to) {
    for (int layer = 0; layer < LAYERS; layer++) {
      for (int t = from; t < to; t++) {
        assertArrayEquals(
            token(layer, l, a, t), token(layer, l, b, t), "layer " + layer + " token " + t);
      }
    }
  }

  @ParameterizedTest
  @CsvSource({"cpu,1", "cpu,2", "nhd,1", "nhd,3", "hnd,1", "flashinfer,1"})
  void savedTokensLoadIntoOtherBlocksByteForByte(String kind, int copyThreads) {
    PagedLayout l =
        switch (kind) {
          case "cpu" -> layout;
          case "nhd" -> PagedLayout.flashAttnNhd(BLOCKS, BLOCK, 2, 4, 2);
          case "hnd" -> PagedLayout.flashAttnHnd(BLOCKS, BLOCK, 2, 4, 2);
          default -> PagedLayout.flashInfer(BLOCKS, BLOCK, 2, 4, 2);
        };
    open(Map.of(), l, copyThreads);
    int[] p = prompt(48, 1);
    int[] src = blocks(0, 1, 6);
    int[] dst = blocks(20, 3, 6);
    assertEquals(3, worker.save(p, 48, src, 0));
    assertEquals(48, engine.lookup(p, 48));
    assertEquals(48, worker.load(p, 48, dst, 0, 48));
    assertSameTokens(l, src, dst, 0, 48);
    long chunkBytes = CHUNK * worker.cache().tokenBytes();
    assertArrayEquals(new long[] {3, 48, 0, 0, 0, 3 * chunkBytes, 0}, worker.stats());
  }

  @Test
  void eachSaveAndLoadThatMovedSomethingLeavesOneDuration() {
    open();
    int[] p = prompt(48, 3);
    assertEquals(2, worker.save(p, 32, blocks(0, 1, 4), 0));
    assertEquals(1, worker.save(p, 48, blocks(0, 1, 6), 2));
    assertEquals(0, worker.save(p, 48, blocks(0, 1, 6), 0), "nothing new: no save, no duration");
    assertEquals(48, worker.load(p, 48, blocks(20, 1, 6), 0, 48));
    assertEquals(16, worker.load(p, 16, blocks(30, 1, 2), 16, 16), "an empty range loads nothing");
    long[][] times = worker.drainLatencies();
    assertEquals(2, times[0].length, "saves");
    assertEquals(1, times[1].length, "loads");
    for (long[] kind : times) {
      for (long ns : kind) {
        assertTrue(ns >= 0, "a duration is never negative");
      }
    }
    long[][] again = worker.drainLatencies();
    assertEquals(0, again[0].length + again[1].length, "a drain takes what it returns");
  }

  /** {@code a}'s first {@code shared} tokens, then tokens {@code a} never has. */
  static int[] sharing(int[] a, int shared, int length) {
    int[] b = new int[length];
    for (int i = 0; i < length; i++) {
      b[i] = i < shared ? a[i] : 200_000 + i;
    }
    return b;
  }

  @ParameterizedTest
  @CsvSource({"cpu", "nhd", "hnd"})
  void aPromptSharingOnlyTheFirstBlocksOfAStoredChunkLoadsThemFromItByteForByte(String kind) {
    PagedLayout l =
        switch (kind) {
          case "cpu" -> layout;
          case "nhd" -> PagedLayout.flashAttnNhd(BLOCKS, BLOCK, 2, 4, 2);
          default -> PagedLayout.flashAttnHnd(BLOCKS, BLOCK, 2, 4, 2);
        };
    open(Map.of(), l, 1);
    assertEquals(BLOCK, engine.blockTokens());
    int[] a = prompt(48, 7);
    int[] src = blocks(0, 1, 6);
    assertEquals(3, worker.save(a, 48, src, 0));
    // b shares chunk 0 and the first block of chunk 1 (tokens 16..23), then differs.
    int[] b = sharing(a, 27, 48);
    assertEquals(24, engine.lookup(b, 48));
    assertArrayEquals(new int[] {24, 24, 0, 0, 24}, engine.lookupAndPinTiers(9, b, 48));
    engine.unpinRequest(9);
    int[] dst = blocks(30, 1, 6);
    assertEquals(24, worker.load(b, 24, dst, 0, 24));
    assertSameTokens(l, src, dst, 0, 24);
    // A load that starts inside the shared chunk's blocks reads only those.
    int[] dst2 = blocks(40, 1, 6);
    assertEquals(23, worker.load(b, 24, dst2, 17, 23));
    assertSameTokens(l, src, dst2, 17, 23);
  }

  @Test
  void aPromptsLastWholeBlocksAreStoredAndHitBySameAndLongerPrompts() {
    open();
    int[] a = prompt(44, 8); // 2 chunks, then 12 tokens: one whole block is kept
    int[] src = blocks(0, 1, 6);
    assertEquals(3, worker.save(a, 44, src, 0));
    assertEquals(40, engine.lookup(a, 44));
    int[] dst = blocks(20, 1, 6);
    assertEquals(40, worker.load(a, 40, dst, 0, 40));
    assertSameTokens(layout, src, dst, 0, 40);
    // A longer prompt that shares all 44 tokens hits the stored block run, and no more.
    assertEquals(40, engine.lookup(sharing(a, 44, 60), 60));
    // Sharing fewer tokens than the block run: whole blocks only.
    assertEquals(32, engine.lookup(sharing(a, 39, 60), 60));
  }

  @Test
  void blockHitsSurviveARestartFromDisk(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir)
      throws Exception {
    Map<String, Object> disk = Map.of("local_disk", dir.toString(), "max_local_disk_size", 0.01);
    open(disk, layout);
    int[] a = prompt(48, 9);
    int[] src = blocks(0, 1, 6);
    assertEquals(3, worker.save(a, 48, src, 0));
    assertTrue(engine.tiers().awaitIdle(60_000), "disk writes still in flight");
    worker.close();
    engine.close();
    open(disk, layout); // same layer contents: the same seeds
    assertEquals(0, engine.tiers().cpu().stats().entries(), "the CPU tier starts empty");
    int[] b = sharing(a, 40, 48);
    assertEquals(40, engine.lookup(b, 48));
    int[] dst = blocks(30, 1, 6);
    assertEquals(40, worker.load(b, 40, dst, 0, 40));
    assertSameTokens(layout, src, dst, 0, 40);
  }

  @Test
  void aLoadFromDisk_copiesEachChunkAsItIsRead_andEndsAtTheFirstMissingOne(
      @org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
    Map<String, Object> disk = Map.of("local_disk", dir.toString(), "max_local_disk_size", 0.01);
    open(disk, layout);
    int[] p = prompt(96, 12); // 6 chunks
    int[] src = blocks(0, 1, 12);
    assertEquals(6, worker.save(p, 96, src, 0));
    assertTrue(engine.tiers().awaitIdle(60_000), "disk writes still in flight");
    worker.close();
    engine.close();
    open(disk, layout);
    int[] dst = blocks(30, 1, 12);
    assertEquals(96, worker.load(p, 96, dst, 0, 96), "every chunk read from disk");
    assertSameTokens(layout, src, dst, 0, 96);
    worker.close();
    engine.close();

    open(disk, layout);
    var keys = engine.keys(p, 96, io.kvtier.key.KeyExtras.NONE, Integer.MAX_VALUE);
    assertTrue(engine.tiers().lowerTiers().get(0).remove(keys[3]));
    int[] other = blocks(20, 1, 12);
    // Chunks 4 and 5 are read in the same batch as the missing chunk 3 and may be copied in before
    // it is known missing: the load still ends at token 48 (vLLM recomputes from there).
    assertEquals(48, worker.load(p, 96, other, 0, 96));
    assertSameTokens(layout, src, other, 0, 48);
    assertEquals(1, worker.stats()[3], "one load fell short");
  }

  @Test
  void aSlidingWindowModel_hitsWholeChunks_andLoadsNothingIntoTheNullBlock() {
    groups = CacheGroups.slidingWindow(LAYERS, 12);
    open();
    assertEquals(CHUNK, engine.blockTokens(), "hits are whole chunks");
    int[] a = prompt(48, 11);
    int[] src = blocks(1, 1, 6);
    assertEquals(3, worker.save(a, 48, src, 0));
    assertEquals(16, engine.lookup(sharing(a, 27, 48), 48), "a block inside a chunk is no hit");
    // vLLM's table for a hit of 48 tokens whose window needs the last 2 blocks: its null block
    // (id 0) where the window no longer reaches.
    int[] dst = {0, 0, 0, 0, 40, 41};
    int[] nullBlock = {0};
    byte[][][] before = new byte[LAYERS][BLOCK][];
    for (int layer = 0; layer < LAYERS; layer++) {
      for (int t = 0; t < BLOCK; t++) {
        before[layer][t] = token(layer, layout, nullBlock, t);
      }
    }
    assertEquals(48, worker.load(a, 48, dst, 0, 48));
    assertSameTokens(layout, src, dst, 32, 48);
    for (int layer = 0; layer < LAYERS; layer++) {
      for (int t = 0; t < BLOCK; t++) {
        assertArrayEquals(before[layer][t], token(layer, layout, nullBlock, t), "null block");
      }
    }
  }

  /** Two groups' tables, block position by block position (as {@link CacheGroups#split} reads). */
  static int[] interleaved(int[] group0, int[] group1) {
    int[] out = new int[group0.length * 2];
    for (int i = 0; i < group0.length; i++) {
      out[2 * i] = group0[i];
      out[2 * i + 1] = group1[i];
    }
    return out;
  }

  /**
   * vLLM's hybrid KV cache manager: layer 0 slides (a window of 4 tokens), layer 1 attends to
   * everything, and both view the same memory, each group with its own blocks from one pool.
   */
  void openTwoGroups() {
    groups = new CacheGroups(new int[] {0, 1}, new int[] {4, 0});
    aliased = true;
    open();
  }

  @Test
  void twoGroupsOverOneMemory_eachGroupsBlocksGoToItsOwnLayersOnly() {
    openTwoGroups();
    assertEquals(CHUNK, engine.blockTokens(), "a sliding group's hits are whole chunks");
    int[] p = prompt(48, 21);
    int[] sliding = blocks(1, 1, 6);
    int[] full = blocks(10, 1, 6);
    assertEquals(3, worker.save(p, 48, interleaved(sliding, full), 0));
    // vLLM's tables for a hit of 48 tokens: the sliding group holds its null block where the
    // window of the next token no longer reaches (tokens before 45: blocks 0..4).
    int[] slidingDst = {0, 0, 0, 0, 0, 41};
    int[] fullDst = blocks(20, 1, 6);
    byte[] nullBefore = token(0, layout, new int[] {0}, 3);
    assertEquals(48, worker.load(p, 48, interleaved(slidingDst, fullDst), 0, 48));
    for (int t = 0; t < 48; t++) {
      assertArrayEquals(token(1, layout, full, t), token(1, layout, fullDst, t), "full " + t);
    }
    for (int t = 40; t < 48; t++) {
      assertArrayEquals(token(0, layout, sliding, t), token(0, layout, slidingDst, t), "sw " + t);
    }
    assertArrayEquals(nullBefore, token(0, layout, new int[] {0}, 3), "the null block changed");
  }

  @Test
  void aSlidingGroupsLoadFailsRatherThanWriteTokensItsSaveDidNotKeep() {
    openTwoGroups();
    int[] p = prompt(48, 22);
    worker.save(p, 48, interleaved(blocks(1, 1, 6), blocks(10, 1, 6)), 0);
    // A table holding a real block at tokens 32..40, before the window the last chunk kept.
    int[] slidingDst = {0, 0, 0, 0, 55, 41};
    assertEquals(0, worker.load(p, 48, interleaved(slidingDst, blocks(20, 1, 6)), 0, 48));
    assertEquals(1, worker.stats()[3], "failed loads");
  }

  @Test
  void aSaveStopsBeforeTheFirstChunkWhoseWindowVllmNoLongerKeeps() {
    openTwoGroups();
    int[] p = prompt(48, 23);
    // The window kept for chunk 1 (tokens 24..32, block 3) was freed by vLLM: chunk 0 only.
    int[] sliding = {1, 2, 3, 0, 5, 6};
    assertEquals(1, worker.save(p, 48, interleaved(sliding, blocks(10, 1, 6)), 0));
    assertEquals(16, engine.lookup(p, 48));
  }

  @Test
  void aTableThatIsNotEveryGroupsBlockByBlockIsAFailedSaveAndLoad() {
    openTwoGroups();
    int[] p = prompt(32, 24);
    assertEquals(0, worker.save(p, 32, blocks(1, 1, 5), 0));
    assertEquals(1, worker.stats()[2], "failed saves");
    worker.save(p, 32, interleaved(blocks(1, 1, 4), blocks(10, 1, 4)), 0);
    assertEquals(0, worker.load(p, 32, blocks(20, 1, 7), 0, 32));
  }

  @Test
  void aSlidingWindowModelsLoadReadsOnlyTheChunksItsWindowNeeds() {
    groups = CacheGroups.slidingWindow(LAYERS, 12);
    open();
    int[] a = prompt(48, 12);
    int[] src = blocks(1, 1, 6);
    assertEquals(1, worker.save(a, 48, src, 2), "only the last chunk is stored");
    int[] dst = {0, 0, 0, 0, 40, 41};
    assertEquals(48, worker.load(a, 48, dst, 0, 48));
    assertSameTokens(layout, src, dst, 32, 48);
    assertEquals(0, worker.load(a, 48, blocks(20, 1, 6), 0, 48), "a whole table needs chunk 0");
  }

  @Test
  void aSlidingWindowModelHitsWithOnlyTheChunksOfItsWindow() {
    groups = CacheGroups.slidingWindow(LAYERS, 12);
    open();
    int[] a = prompt(64, 13);
    int[] src = blocks(1, 1, 8);
    assertEquals(2, worker.save(a, 64, src, 2), "chunks 2 and 3 only");
    // The window of the token before 64 starts at block 6 (token 48): chunk 3 alone serves 64.
    int[] hit = engine.lookupAndPinTiers(1, a, 64);
    assertEquals(64, hit[0]);
    assertEquals(64, hit[1], "in memory");
    int[] dst = {0, 0, 0, 0, 0, 0, 40, 41};
    assertEquals(63, worker.load(a, 64, dst, 0, 63));
    assertSameTokens(layout, src, dst, 48, 63);
    engine.unpinRequest(1);
    // A model with a full-attention group needs every chunk from the first.
    assertEquals(0, engine.lookup(a, 64));
  }

  @Test
  void aModelWithAFullAttentionGroupHitsOnlyTheStoredPrefix() {
    openTwoGroups();
    int[] a = prompt(64, 14);
    assertEquals(2, worker.save(a, 64, interleaved(blocks(1, 1, 8), blocks(20, 1, 8)), 2));
    assertEquals(0, engine.lookupAndPinTiers(1, a, 64)[0]);
    engine.unpinRequest(1);
  }

  @Test
  void withoutABlockSizeThatDividesTheChunkHitsStayWholeChunks() {
    open(Map.of(), PagedLayout.cpuBackend(BLOCKS, 16, 2, 4, 2));
    assertEquals(CHUNK, engine.blockTokens());
    int[] a = prompt(48, 10);
    assertEquals(3, worker.save(a, 48, blocks(0, 1, 3), 0));
    assertEquals(16, engine.lookup(sharing(a, 27, 48), 48));
  }

  @Test
  void loadStartingAndEndingInsideChunksTouchesOnlyThoseTokens() {
    open();
    int[] p = prompt(48, 2);
    int[] src = blocks(0, 1, 6);
    int[] dst = blocks(30, 1, 6);
    worker.save(p, 48, src, 0);
    byte[] before0 = token(0, layout, dst, 7);
    byte[] before1 = token(1, layout, dst, 41);
    assertEquals(41, worker.load(p, 48, dst, 8, 41));
    assertSameTokens(layout, src, dst, 8, 41);
    assertArrayEquals(before0, token(0, layout, dst, 7), "token before the range changed");
    assertArrayEquals(before1, token(1, layout, dst, 41), "token after the range changed");
  }

  @Test
  void partialTailChunkRoundTrips() {
    open(Map.of("save_unfull_chunk", true), layout);
    int[] p = prompt(40, 3);
    int[] src = blocks(0, 1, 5);
    int[] dst = blocks(40, 1, 5);
    assertEquals(3, worker.save(p, 40, src, 0));
    assertEquals(40, engine.lookup(p, 40));
    assertEquals(39, worker.load(p, 40, dst, 0, 39));
    assertSameTokens(layout, src, dst, 0, 39);
  }

  @Test
  void savesSkipChunksAlreadyStoredAndChunksBeforeFromChunk() {
    open();
    int[] p = prompt(64, 4);
    int[] src = blocks(0, 1, 8);
    assertEquals(1, worker.save(p, 16, src, 0));
    assertEquals(2, worker.save(p, 64, src, 2));
    assertEquals(16, engine.lookup(p, 64), "chunk 1 was skipped, so the prefix ends there");
    assertEquals(1, worker.save(p, 64, src, 0));
    assertEquals(64, engine.lookup(p, 64));
  }

  @Test
  void missingChunkEndsTheLoadThere() {
    open();
    int[] p = prompt(48, 5);
    int[] src = blocks(0, 1, 6);
    worker.save(p, 48, src, 0);
    ChunkKey[] keys = ChunkHasher.keys(engine.namespace().id(), p, 48, CHUNK, false, 3);
    assertTrue(engine.tiers().remove(keys[1]));
    int[] dst = blocks(10, 1, 6);
    assertEquals(16, worker.load(p, 48, dst, 0, 48));
    assertSameTokens(layout, src, dst, 0, 16);
    assertEquals(1, worker.stats()[3], "failed loads");
  }

  @Test
  void layerwiseSaveAndLoadEqualWholeOnes() {
    open();
    int[] p = prompt(32, 6);
    int[] src = blocks(0, 1, 4);
    long h = worker.beginSave(p, 32, src, 0);
    assertNotEquals(0, h);
    for (int l = 0; l < LAYERS; l++) {
      worker.saveLayer(h, l);
    }
    assertEquals(2, worker.endSave(h, true));
    int[] dst = blocks(50, 1, 4);
    long lh = worker.beginLoad(p, 32, dst, 0, 32);
    for (int l = LAYERS - 1; l >= 0; l--) {
      worker.loadLayer(lh, l);
    }
    assertEquals(32, worker.endLoad(lh));
    assertSameTokens(layout, src, dst, 0, 32);
    assertEquals(0, worker.beginSave(p, 32, src, 0), "nothing left to save");
  }

  @Test
  void lookupDuringASaveSaysTheNextChunkIsBeingStored() {
    open();
    int[] p = prompt(48, 11);
    worker.save(p, 16, blocks(0, 1, 6), 0);
    long h = worker.beginSave(p, 48, blocks(0, 1, 6), 1);
    assertArrayEquals(new int[] {16, 16, 1, 0, 16}, engine.lookupAndPinTiers(1, p, 48));
    for (int l = 0; l < LAYERS; l++) {
      worker.saveLayer(h, l);
    }
    worker.endSave(h, true);
    assertArrayEquals(new int[] {48, 48, 0, 0, 48}, engine.lookupAndPinTiers(1, p, 48));
    long discarded = worker.beginSave(prompt(16, 12), 16, blocks(0, 1, 2), 0);
    worker.endSave(discarded, false);
    assertArrayEquals(new int[] {0, 0, 0, 0, 0}, engine.lookupAndPinTiers(2, prompt(16, 12), 16));
    engine.unpinRequest(1);
  }

  @Test
  void discardedSaveLeavesNothingVisible() {
    open();
    int[] p = prompt(32, 7);
    long h = worker.beginSave(p, 32, blocks(0, 1, 4), 0);
    worker.saveLayer(h, 0);
    assertEquals(0, worker.endSave(h, false));
    assertEquals(0, engine.lookup(p, 32));
    assertEquals(1, worker.stats()[2]);
  }

  @Test
  void badBlockTablesAreCountedFailuresNotExceptions() {
    open();
    int[] p = prompt(32, 8);
    assertEquals(0, worker.save(p, 32, blocks(0, 1, 2), 0), "table covers 16 of 32 tokens");
    assertEquals(0, engine.lookup(p, 32));
    assertEquals(0, worker.save(p, 32, new int[] {0, 1, BLOCKS, 3}, 0), "block id out of range");
    worker.save(p, 32, blocks(0, 1, 4), 0);
    assertEquals(0, worker.load(p, 32, blocks(0, 1, 1), 0, 32));
    assertEquals(0, worker.load(p, 32, blocks(0, 1, 4), 0, 40), "beyond the stored prefix");
    assertEquals(2, worker.stats()[2]);
    assertEquals(2, worker.stats()[3]);
  }

  @Test
  void layerwiseSaveWithABadBlockTableIsDiscardedNotThrown() {
    open();
    int[] p = prompt(32, 13);
    long h = worker.beginSave(p, 32, blocks(0, 1, 2), 0); // the table covers 16 of 32 tokens
    for (int l = 0; l < LAYERS; l++) {
      worker.saveLayer(h, l);
    }
    assertEquals(0, worker.endSave(h, true));
    assertEquals(0, engine.lookup(p, 32));
    assertEquals(1, worker.stats()[2], "failed saves");
  }

  @Test
  void backgroundSavesAndLoadsReportTheirTickets() throws Exception {
    open();
    int[] p = prompt(64, 9);
    int[] src = blocks(0, 1, 8);
    long s = worker.submitSave(p, 64, src, 0);
    assertTrue(worker.awaitTickets(new long[] {s}, 60_000));
    int[] dst = blocks(32, 1, 8);
    long l = worker.submitLoad(p, 64, dst, 16, 64);
    assertTrue(worker.awaitTickets(new long[] {l}, 60_000));
    Map<Long, Long> done = new HashMap<>();
    long[] d = worker.drainCompleted();
    for (int i = 0; i < d.length; i += 2) {
      done.put(d[i], d[i + 1]);
    }
    assertEquals(Map.of(s, 4L, l, 64L), done);
    assertSameTokens(layout, src, dst, 16, 64);
    assertEquals(0, worker.drainCompleted().length);
  }

  @Test
  void cacheMustMatchTheEnginesBytesPerToken() {
    open();
    PagedKvCache other = new PagedKvCache(new MemorySegment[] {layers[0]}, layout);
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> new KvWorker(engine, other, 1));
    assertTrue(e.getMessage().contains("bytes per token"), e.getMessage());
  }

  /**
   * With the transfer thread busy and its queue full, a further save or load is refused at once
   * instead of queued without bound: the save releases what it reserved and stores nothing, the
   * load loads nothing (vLLM recomputes it), both counted; the queued ones still run.
   */
  @Test
  void transfersBeyondTheQueue_areRefusedAtOnce_andCounted() throws Exception {
    open();
    worker.close();
    java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
    io.kvtier.transfer.KvCacheTransfer real = worker.cache();
    io.kvtier.transfer.KvCacheTransfer stuck =
        (io.kvtier.transfer.KvCacheTransfer)
            java.lang.reflect.Proxy.newProxyInstance(
                getClass().getClassLoader(),
                new Class<?>[] {io.kvtier.transfer.KvCacheTransfer.class},
                (proxy, m, args) -> {
                  if (m.getName().equals("gather")) {
                    release.await(); // the transfer thread is busy until released
                  }
                  try {
                    return m.invoke(real, args);
                  } catch (java.lang.reflect.InvocationTargetException e) {
                    throw e.getCause();
                  }
                });
    worker = new KvWorker(engine, stuck, 1);
    int[] p = prompt(48, 21);
    long running = worker.submitSave(p, 48, blocks(0, 1, 6), 0);
    long[] queued = new long[KvWorker.TRANSFER_QUEUE];
    for (int i = 0; i < queued.length; i++) {
      queued[i] = worker.submitLoad(p, 48, blocks(20, 1, 6), 0, 0);
    }
    int[] other = prompt(48, 22);
    long refusedSave = worker.submitSave(other, 48, blocks(6, 1, 6), 0);
    long refusedLoad = worker.submitLoad(p, 48, blocks(20, 1, 6), 16, 48);
    long[] done = worker.drainCompleted();
    assertArrayEquals(new long[] {refusedSave, 0, refusedLoad, 16}, done, "refused at once");
    assertEquals(0, engine.lookup(other, 48), "the refused save's chunks are not stored");
    release.countDown();
    long[] all = new long[queued.length + 1];
    all[0] = running;
    System.arraycopy(queued, 0, all, 1, queued.length);
    assertTrue(worker.awaitTickets(all, 60_000));
    assertEquals(48, engine.lookup(p, 48), "the running save completed");
    long[] stats = worker.stats();
    assertEquals(2, stats[4], "rejected transfers");
    assertEquals(1, stats[2], "the refused save counts as failed");
    assertEquals(1, stats[3], "the refused load counts as failed");
  }
}
