package io.kvtier.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.kvtier.transfer.HostKvTransfer;
import io.kvtier.transfer.HostKvTransferTest;
import io.kvtier.transfer.PagedLayout;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The launch arithmetic of the CUDA kernels, run on the CPU: a model of {@code kv_copy.cu}'s loop
 * (one CUDA block per token and layer/K-V, threads over vector units of each head) driven by {@link
 * KvCopyArgs} must move exactly the bytes {@link HostKvTransfer} moves, for every layout, element
 * size and block size, whole chunks, single layers and partial rows.
 */
class KvCopyArgsTest {
  static Stream<PagedLayout> layouts() {
    return Stream.of(
        PagedLayout.flashAttnNhd(12, 16, 4, 32, 2),
        PagedLayout.flashAttnHnd(12, 16, 4, 32, 2),
        PagedLayout.flashInfer(12, 32, 4, 32, 2),
        PagedLayout.mla(12, 64, 72, 2), // block 64
        PagedLayout.cpuBackend(8, 16, 2, 64, 2),
        PagedLayout.flashAttnNhd(10, 32, 2, 64, 1), // fp8
        PagedLayout.splitKv(8, 16, 4, 32, 2, 16L * 4 * 64, 64, 4 * 64), // 0.32 NHD: [B, N, H, C]
        PagedLayout.splitKv(
            8, 64, 2, 24, 1, 64L * 2 * 48, 64 * 48, 48), // 0.32 HND fp8 [B, H, N, C]
        // One layer of a cross-layer tensor [B, L=3, H, N, C]: blocks are 3 layers apart.
        PagedLayout.splitKv(6, 16, 2, 32, 2, 3L * 2 * 16 * 64, 16 * 64, 64),
        PagedLayout.flashAttnHnd(4, 16, 3, 12, 4)); // fp32, 48-byte rows
  }

  /** What the kernel does, thread by thread, for one launch. */
  static void runKernelModel(
      KvCopyArgs a, boolean toCache, MemorySegment[] layers, long[] slots, MemorySegment chunk) {
    int w = a.vectorWidth();
    int unitsPerHead = a.headRow() / w;
    for (int t = 0; t < a.count(); t++) {
      for (int y = 0; y < a.gridY(); y++) {
        int layer = a.firstLayer() + y / a.kvCount();
        int kv = y % a.kvCount();
        int row = (a.skip() + t) % a.rowTokens();
        for (int thread = 0; thread < a.threads(); thread++) {
          for (int i = thread; i < unitsPerHead * a.numHeads(); i += a.threads()) {
            int h = i / unitsPerHead;
            int u = i - h * unitsPerHead;
            long c = a.chunkOffset(layer, kv, row, h) + (long) u * w;
            long k = a.cacheOffset(kv, slots[t], h) + (long) u * w;
            if (toCache) {
              MemorySegment.copy(chunk, c, layers[layer], k, w);
            } else {
              MemorySegment.copy(layers[layer], k, chunk, c, w);
            }
          }
        }
      }
    }
  }

  private static MemorySegment[] randomLayers(Arena arena, PagedLayout l, int n, long seed) {
    Random r = new Random(seed);
    MemorySegment[] layers = new MemorySegment[n];
    for (int i = 0; i < n; i++) {
      byte[] b = new byte[(int) l.tensorBytes()];
      r.nextBytes(b);
      layers[i] = arena.allocate(b.length, 16);
      MemorySegment.copy(MemorySegment.ofArray(b), 0, layers[i], 0, b.length);
    }
    return layers;
  }

  @ParameterizedTest
  @MethodSource("layouts")
  void gatherMatchesTheHostPathForWholeChunksAndSingleLayers(PagedLayout l) {
    int layerCount = 3;
    int tokens = 2 * l.blockSize() + 5;
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment[] layers = randomLayers(arena, l, layerCount, 1);
      long[] slots = HostKvTransferTest.mapping(l, tokens, 2);
      long chunkBytes = tokens * l.tokenBytes() * layerCount;
      MemorySegment expected = arena.allocate(chunkBytes, 16);
      for (int layer = 0; layer < layerCount; layer++) {
        HostKvTransfer.gather(
            layers[layer], l, slots, 0, tokens, expected, layer * tokens * l.tokenBytes());
      }
      MemorySegment whole = arena.allocate(chunkBytes, 16);
      KvCopyArgs a = KvCopyArgs.plan(l, 0, layerCount, tokens, 0, tokens, 0);
      runKernelModel(a, false, layers, slots, whole);
      assertEquals(-1, expected.mismatch(whole), "whole-chunk gather of " + l);

      MemorySegment byLayer = arena.allocate(chunkBytes, 16);
      for (int layer = 0; layer < layerCount; layer++) {
        runKernelModel(
            KvCopyArgs.plan(l, layer, 1, tokens, 0, tokens, 0), false, layers, slots, byLayer);
      }
      assertEquals(-1, expected.mismatch(byLayer), "layerwise gather of " + l);
    }
  }

  @ParameterizedTest
  @MethodSource("layouts")
  void scatterOfPartRowsMatchesTheHostPath(PagedLayout l) {
    int layerCount = 2;
    int rows = l.blockSize() + 7;
    int skip = 3;
    int count = rows - skip - 2;
    try (Arena arena = Arena.ofConfined()) {
      byte[] bytes = new byte[(int) (rows * l.tokenBytes() * layerCount)];
      new Random(6).nextBytes(bytes);
      MemorySegment chunk = arena.allocate(bytes.length, 16);
      MemorySegment.copy(MemorySegment.ofArray(bytes), 0, chunk, 0, bytes.length);
      long[] slots = HostKvTransferTest.mapping(l, count, 7);
      MemorySegment[] expected = randomLayers(arena, l, layerCount, 8);
      MemorySegment[] actual = randomLayers(arena, l, layerCount, 8);
      for (int layer = 0; layer < layerCount; layer++) {
        HostKvTransfer.copyRange(
            expected[layer],
            l,
            slots,
            0,
            count,
            chunk,
            layer * rows * l.tokenBytes(),
            rows,
            skip,
            true);
      }
      runKernelModel(
          KvCopyArgs.plan(l, 0, layerCount, rows, skip, count, 0), true, actual, slots, chunk);
      for (int layer = 0; layer < layerCount; layer++) {
        assertEquals(-1, expected[layer].mismatch(actual[layer]), "layer " + layer + " of " + l);
      }
    }
  }

  @Test
  void vectorWidthIsTheWidestThatDividesEveryAddressStrideAndRow() {
    PagedLayout llama = PagedLayout.flashAttnNhd(100, 16, 8, 128, 2);
    KvCopyArgs a = KvCopyArgs.plan(llama, 0, 32, 256, 0, 256, 0x7f0000000000L, 0x200000L);
    assertEquals(16, a.vectorWidth());
    assertEquals(128, a.threads()); // 8 heads x 256 bytes / 16
    assertEquals(64, a.gridY());
    // an address only 4-aligned limits every load to 4 bytes
    assertEquals(4, KvCopyArgs.plan(llama, 0, 1, 16, 0, 16, 0x1004L).vectorWidth());
    // fp8 with 72-element heads: 72-byte rows allow 8-byte loads
    PagedLayout fp8 = PagedLayout.flashAttnNhd(10, 16, 2, 72, 1);
    assertEquals(8, KvCopyArgs.plan(fp8, 0, 1, 16, 0, 16, 0).vectorWidth());
    // MLA: one 1152-byte latent row per token, 72 units -> 96 threads (whole warps)
    KvCopyArgs mla = KvCopyArgs.plan(PagedLayout.mla(10, 64, 576, 2), 0, 1, 64, 0, 64, 0);
    assertEquals(96, mla.threads());
    assertEquals(1, mla.gridY());
  }

  @Test
  void badRangesAreRefused() {
    PagedLayout l = PagedLayout.flashAttnNhd(10, 16, 2, 64, 2);
    assertThrows(IllegalArgumentException.class, () -> KvCopyArgs.plan(l, 0, 1, 16, 10, 7, 0));
    assertThrows(IllegalArgumentException.class, () -> KvCopyArgs.plan(l, 0, 1, 16, 0, 0, 0));
    assertThrows(IllegalArgumentException.class, () -> KvCopyArgs.plan(l, 0, 40_000, 16, 0, 16, 0));
  }
}
