package io.kvtier.transfer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/** Gather and scatter against an element-by-element reference, for every layout. */
public class HostKvTransferTest {
  static Stream<PagedLayout> layouts() {
    return Stream.of(
        PagedLayout.flashAttnNhd(12, 16, 4, 32, 2), // bf16/fp16
        PagedLayout.flashAttnHnd(12, 16, 4, 32, 2),
        PagedLayout.flashInfer(12, 16, 4, 32, 2),
        PagedLayout.mla(12, 16, 96, 2),
        PagedLayout.cpuBackend(8, 64, 2, 64, 2), // vLLM CPU_ATTN, block 64
        PagedLayout.flashAttnNhd(10, 32, 2, 64, 1), // fp8, block 32
        PagedLayout.flashAttnHnd(6, 64, 8, 16, 1)); // block 64
  }

  /** A mapping like vLLM's: whole blocks in random order, then a partial block. */
  public static long[] mapping(PagedLayout l, int tokens, long seed) {
    List<Integer> blocks = new ArrayList<>();
    for (int b = 0; b < l.numBlocks(); b++) {
      blocks.add(b);
    }
    Collections.shuffle(blocks, new Random(seed));
    long[] slots = new long[tokens];
    for (int t = 0; t < tokens; t++) {
      slots[t] = (long) blocks.get(t / l.blockSize()) * l.blockSize() + t % l.blockSize();
    }
    return slots;
  }

  /** Byte offset of element (kv, slot, head, d) in the tensor, straight from the definition. */
  static long offset(PagedLayout l, int kv, long slot, int head, int d) {
    long block = slot / l.blockSize();
    long in = slot % l.blockSize();
    return (kv * l.kvStride()
            + block * l.blockStride()
            + in * l.slotStride()
            + head * l.headStride()
            + d)
        * l.elementBytes();
  }

  /** Row index of (kv, token, head) in the chunk order the layout documents. */
  static long chunkIndex(PagedLayout l, int kv, int t, int h, int tokens) {
    return l.headMajorChunk()
        ? ((long) kv * l.numHeads() + h) * tokens + t
        : ((long) kv * tokens + t) * l.numHeads() + h;
  }

  @ParameterizedTest
  @MethodSource("layouts")
  void chunkOrder_followsTheLayout(PagedLayout l) {
    boolean hnd = l.slotStride() == l.headSize() && l.numHeads() > 1;
    assertEquals(hnd ? "head-major" : "token-major", l.chunkOrder());
  }

  @ParameterizedTest
  @MethodSource("layouts")
  void gather_matchesReference_andScatterRoundTrips(PagedLayout l) {
    int tokens = (l.numBlocks() - 2) * l.blockSize() + 5;
    long[] slots = mapping(l, tokens, 7);
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment cache = arena.allocate(l.tensorBytes());
      byte[] noise = new byte[(int) l.tensorBytes()];
      new Random(1).nextBytes(noise);
      MemorySegment.copy(noise, 0, cache, ValueLayout.JAVA_BYTE, 0, noise.length);
      long chunkOffset = 100;
      MemorySegment chunk = arena.allocate(chunkOffset + tokens * l.tokenBytes());

      HostKvTransfer.gather(cache, l, slots, 0, tokens, chunk, chunkOffset);

      int e = l.elementBytes();
      for (int kv = 0; kv < l.kvCount(); kv++) {
        for (int t = 0; t < tokens; t++) {
          for (int h = 0; h < l.numHeads(); h++) {
            for (int d = 0; d < l.headSize(); d++) {
              long src = offset(l, kv, slots[t], h, d);
              long pos = chunkOffset + chunkIndex(l, kv, t, h, tokens) * l.headSize() * e + d * e;
              for (int b = 0; b < e; b++) {
                if (cache.get(ValueLayout.JAVA_BYTE, src + b)
                    != chunk.get(ValueLayout.JAVA_BYTE, pos + b)) {
                  throw new AssertionError("kv " + kv + " token " + t + " head " + h + " d " + d);
                }
              }
            }
          }
        }
      }

      MemorySegment back = arena.allocate(l.tensorBytes()); // zeroed
      HostKvTransfer.scatter(chunk, chunkOffset, l, slots, 0, tokens, back);
      MemorySegment again = arena.allocate(chunk.byteSize());
      HostKvTransfer.gather(back, l, slots, 0, tokens, again, chunkOffset);
      assertEquals(-1, chunk.asSlice(chunkOffset).mismatch(again.asSlice(chunkOffset)));
      long touched = 0;
      for (long i = 0; i < back.byteSize(); i++) {
        if (back.get(ValueLayout.JAVA_BYTE, i) != 0) {
          touched++;
        }
      }
      assertTrue(
          touched <= (long) tokens * l.tokenBytes(), "scatter wrote outside the mapped slots");
    }
  }

  @ParameterizedTest
  @MethodSource("layouts")
  void badMapping_orShortSegments_throwNamingTheProblem(PagedLayout l) {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment cache = arena.allocate(l.tensorBytes());
      MemorySegment chunk = arena.allocate(4 * l.tokenBytes());
      long[] bad = {0, 1, l.slots(), 3};
      IllegalArgumentException e =
          assertThrows(
              IllegalArgumentException.class,
              () -> HostKvTransfer.gather(cache, l, bad, 0, 4, chunk, 0));
      assertTrue(e.getMessage().contains("slot " + l.slots()), e.getMessage());
      assertThrows(
          IllegalArgumentException.class,
          () -> HostKvTransfer.gather(cache, l, new long[] {0, 1, 2, 3, 4}, 0, 5, chunk, 0));
      assertThrows(
          IllegalArgumentException.class,
          () ->
              HostKvTransfer.gather(
                  cache.asSlice(0, l.tensorBytes() - 1), l, new long[] {0}, 0, 1, chunk, 0));
    }
  }
}
