package io.kvtier.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.KvTierConfig;
import io.kvtier.memory.LeakCheck;
import io.kvtier.transfer.PagedLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class WarmUpTest {
  @BeforeEach
  @AfterEach
  void forget() {
    WarmUp.reset();
  }

  @Test
  void scratchLayout_keepsTheGeometry_andScalesOnlyTheStridesSpanningEveryBlock() {
    // vLLM's CPU backend: [blocks, heads, 2, blockSize, headSize]; blocks outermost.
    PagedLayout cpu = PagedLayout.cpuBackend(1000, 16, 4, 64, 2);
    PagedLayout small = WarmUp.scratchLayout(cpu, 32);
    assertEquals(32, small.numBlocks());
    assertEquals(cpu.blockStride(), small.blockStride());
    assertEquals(cpu.kvStride(), small.kvStride());
    assertEquals(cpu.tokenBytes(), small.tokenBytes());
    assertEquals(cpu.tensorBytes() / 1000 * 32, small.tensorBytes());
    // FlashAttention NHD: [2, blocks, blockSize, heads, headSize]; K/V outermost.
    PagedLayout nhd = PagedLayout.flashAttnNhd(1000, 16, 4, 64, 2);
    PagedLayout scaled = WarmUp.scratchLayout(nhd, 32);
    assertEquals(32 * nhd.blockStride(), scaled.kvStride());
    assertEquals(nhd.slotStride(), scaled.slotStride());
    // Heads outside the blocks ([heads, blocks, ...]): the head stride spans every block.
    PagedLayout headsOuter = new PagedLayout(10, 16, 2, 4, 64, 2, 64 * 16, 2048, 64, 10 * 2048);
    assertEquals(4 * 2048, WarmUp.scratchLayout(headsOuter, 4).headStride());
    // Blocks interleaved with another dimension: a scratch cache could not keep the shape.
    PagedLayout interleaved = new PagedLayout(10, 16, 2, 4, 64, 2, 64 * 16, 2048, 64, 3 * 2048);
    assertNull(WarmUp.scratchLayout(interleaved, 4));
  }

  @Test
  void savesAndLoadsOnScratchMemory_onceAJvm_andLeavesNothingBehind(@TempDir Path disk)
      throws Exception {
    LeakCheck.Mark mark = LeakCheck.mark();
    Path tmp = Path.of(System.getProperty("java.io.tmpdir"));
    long before = warmUpDirs(tmp);
    KvTierConfig config =
        KvTierConfig.of(
            Map.of("chunk_size", 32, "local_disk", disk.toString(), "max_local_disk_size", 1));
    WarmUp.Report first = WarmUp.run(config, PagedLayout.cpuBackend(500, 16, 2, 32, 4), 2);
    assertEquals(2 * WarmUp.PROMPTS, first.prompts(), "a CPU round and a disk round");
    assertTrue(first.disk());
    assertEquals(
        2L * WarmUp.PROMPTS * (WarmUp.CHUNKS * 32 - 1),
        first.loadedTokens(),
        "every prompt loaded back but its last token, from memory and from disk");
    WarmUp.Report again = WarmUp.run(config, PagedLayout.cpuBackend(500, 16, 2, 32, 4), 2);
    assertEquals(0, again.prompts(), "compiled code is the JVM's: once is enough");
    try (Stream<Path> left = Files.list(disk)) {
      assertEquals(0, left.count(), "the real disk directory is untouched");
    }
    assertEquals(before, warmUpDirs(tmp), "the scratch disk tier is deleted");
    LeakCheck.assertNoLeaksSince(mark, 5_000, false);
  }

  @Test
  void startForCpuBackend_warmsUpInTheBackground_andALaterRunReturnsAtOnce() {
    assertNull(WarmUp.awaitBackground(0), "nothing started yet");
    KvTierConfig config = KvTierConfig.of(Map.of("chunk_size", 32));
    WarmUp.startForCpuBackend(config, 16, 2, 32, 4, 2);
    WarmUp.Report r = WarmUp.awaitBackground(60_000);
    assertEquals(WarmUp.PROMPTS, r.prompts());
    assertEquals(WarmUp.PROMPTS * (WarmUp.CHUNKS * 32L - 1), r.loadedTokens());
    assertEquals(0, WarmUp.run(config, PagedLayout.cpuBackend(500, 16, 2, 32, 4), 2).prompts());
  }

  @Test
  void layerwise_warmsTheLayerByLayerPaths() {
    KvTierConfig config = KvTierConfig.of(Map.of("chunk_size", 16, "use_layerwise", true));
    WarmUp.Report r = WarmUp.run(config, PagedLayout.flashAttnNhd(64, 16, 2, 32, 2), 1);
    assertEquals(WarmUp.PROMPTS, r.prompts());
    assertEquals(WarmUp.PROMPTS * (WarmUp.CHUNKS * 16L - 1), r.loadedTokens());
    assertEquals(false, r.disk());
  }

  private static long warmUpDirs(Path tmp) throws Exception {
    try (Stream<Path> s = Files.list(tmp)) {
      return s.filter(p -> p.getFileName().toString().startsWith("kvtier-warmup-")).count();
    }
  }
}
