package io.kvtier.transfer;

import java.lang.foreign.MemorySegment;

/**
 * Moves tokens between one layer's paged KV cache in host memory (vLLM's CPU backend, or a pinned
 * mirror of a GPU cache) and the contiguous chunk layout, driven by the slot mapping. The data path
 * of the CPU backend, and the reference the GPU kernels are checked against.
 *
 * <p>Slot {@code s} is token {@code s % blockSize} of block {@code s / blockSize}. Runs of
 * consecutive slots within one block are copied at once where a slot's heads are adjacent
 * (NHD-style layouts), so a 16-token block costs one copy per K and V.
 *
 * <p>Stateless and thread-safe; callers run layers on different threads if they want parallelism.
 * Every access is bounds-checked by the FFM segments: a wrong layout or mapping throws, it never
 * touches memory outside the tensor or the chunk.
 */
public final class HostKvTransfer {
  private HostKvTransfer() {}

  /**
   * Copies the tokens at {@code slots[from, from + count)} of the layer tensor {@code cache} into
   * {@code chunk} at {@code chunkOffset}, as {@code [kv][token][head][d]}.
   *
   * @throws IllegalArgumentException if a slot is outside the tensor or a segment is too small
   */
  public static void gather(
      MemorySegment cache,
      PagedLayout layout,
      long[] slots,
      int from,
      int count,
      MemorySegment chunk,
      long chunkOffset) {
    move(cache, layout, slots, from, count, chunk, chunkOffset, count, 0, false);
  }

  /**
   * Copies {@code count} tokens from {@code chunk} at {@code chunkOffset} (as written by {@link
   * #gather}) into the layer tensor {@code cache} at {@code slots[from, from + count)}.
   *
   * @throws IllegalArgumentException if a slot is outside the tensor or a segment is too small
   */
  public static void scatter(
      MemorySegment chunk,
      long chunkOffset,
      PagedLayout layout,
      long[] slots,
      int from,
      int count,
      MemorySegment cache) {
    move(cache, layout, slots, from, count, chunk, chunkOffset, count, 0, true);
  }

  /**
   * Copies tokens {@code [skip, skip + count)} of a chunk laid out for {@code rowTokens} tokens (as
   * {@link #gather} writes a chunk of {@code rowTokens}) to or from the cache slots {@code
   * slots[from, from + count)}: part of a chunk, as a load that starts or ends inside one needs.
   *
   * @param toCache true to scatter (chunk to cache), false to gather
   * @throws IllegalArgumentException if a slot is outside the tensor, the token range is outside
   *     the chunk's rows, or a segment is too small
   */
  public static void copyRange(
      MemorySegment cache,
      PagedLayout layout,
      long[] slots,
      int from,
      int count,
      MemorySegment chunk,
      long chunkOffset,
      int rowTokens,
      int skip,
      boolean toCache) {
    if (skip < 0 || rowTokens < 0 || skip + count > rowTokens) {
      throw new IllegalArgumentException(
          "tokens ["
              + skip
              + ", "
              + (skip + count)
              + ") are outside a chunk of "
              + rowTokens
              + " tokens");
    }
    move(cache, layout, slots, from, count, chunk, chunkOffset, rowTokens, skip, toCache);
  }

  private static void move(
      MemorySegment cache,
      PagedLayout l,
      long[] slots,
      int from,
      int count,
      MemorySegment chunk,
      long chunkOffset,
      int rowTokens,
      int skip,
      boolean toCache) {
    if (cache.byteSize() < l.tensorBytes()) {
      throw new IllegalArgumentException(
          "the cache tensor has "
              + cache.byteSize()
              + " bytes; the layout needs "
              + l.tensorBytes());
    }
    if (from < 0 || count < 0 || from + count > slots.length) {
      throw new IllegalArgumentException(
          "slots [" + from + ", " + (from + count) + ") outside a mapping of " + slots.length);
    }
    long need = chunkOffset + rowTokens * l.tokenBytes();
    if (chunkOffset < 0 || chunk.byteSize() < need) {
      throw new IllegalArgumentException(
          "the chunk has " + chunk.byteSize() + " bytes; " + need + " are needed");
    }
    long e = l.elementBytes();
    long headRow = (long) l.headSize() * e;
    long tokenRow = headRow * l.numHeads();
    boolean runs = l.headsContiguous();
    if (l.headMajorChunk()) {
      moveHeadMajor(cache, l, slots, from, count, chunk, chunkOffset, rowTokens, skip, toCache);
      return;
    }
    for (int kv = 0; kv < l.kvCount(); kv++) {
      long chunkBase = chunkOffset + (kv * rowTokens + skip) * tokenRow;
      int t = 0;
      while (t < count) {
        long slot = slotAt(l, slots, from + t);
        long block = slot / l.blockSize();
        long inBlock = slot % l.blockSize();
        long base = kv * l.kvStride() + block * l.blockStride() + inBlock * l.slotStride();
        if (runs) {
          int run = runLength(l, slots, from + t, from + count, slot);
          copy(cache, base * e, chunk, chunkBase + t * tokenRow, run * tokenRow, toCache);
          t += run;
        } else {
          for (int h = 0; h < l.numHeads(); h++) {
            copy(
                cache,
                (base + h * l.headStride()) * e,
                chunk,
                chunkBase + t * tokenRow + h * headRow,
                headRow,
                toCache);
          }
          t++;
        }
      }
    }
  }

  /** {@code [kv][head][token][d]} chunks: one copy per run of a head's consecutive tokens. */
  private static void moveHeadMajor(
      MemorySegment cache,
      PagedLayout l,
      long[] slots,
      int from,
      int count,
      MemorySegment chunk,
      long chunkOffset,
      int rowTokens,
      int skip,
      boolean toCache) {
    long e = l.elementBytes();
    long headRow = (long) l.headSize() * e;
    for (int kv = 0; kv < l.kvCount(); kv++) {
      for (int h = 0; h < l.numHeads(); h++) {
        long chunkBase =
            chunkOffset + (((long) kv * l.numHeads() + h) * rowTokens + skip) * headRow;
        int t = 0;
        while (t < count) {
          long slot = slotAt(l, slots, from + t);
          long block = slot / l.blockSize();
          long inBlock = slot % l.blockSize();
          int run = runLength(l, slots, from + t, from + count, slot);
          long base =
              kv * l.kvStride()
                  + block * l.blockStride()
                  + h * l.headStride()
                  + inBlock * l.slotStride();
          copy(cache, base * e, chunk, chunkBase + t * headRow, run * headRow, toCache);
          t += run;
        }
      }
    }
  }

  /** The slot at mapping index {@code i}, checked against the tensor. */
  private static long slotAt(PagedLayout l, long[] slots, int i) {
    long slot = slots[i];
    if (slot < 0 || slot >= l.slots()) {
      throw new IllegalArgumentException(
          "slot " + slot + " (mapping index " + i + ") is outside 0.." + l.slots());
    }
    return slot;
  }

  /** How many consecutive slots from mapping index {@code i} (slot {@code slot}) share a block. */
  private static int runLength(PagedLayout l, long[] slots, int i, int end, long slot) {
    long inBlock = slot % l.blockSize();
    int run = 1;
    while (i + run < end && slots[i + run] == slot + run && inBlock + run < l.blockSize()) {
      run++;
    }
    return run;
  }

  private static void copy(
      MemorySegment cache,
      long cacheOffset,
      MemorySegment chunk,
      long chunkOffset,
      long bytes,
      boolean toCache) {
    if (toCache) {
      MemorySegment.copy(chunk, chunkOffset, cache, cacheOffset, bytes);
    } else {
      MemorySegment.copy(cache, cacheOffset, chunk, chunkOffset, bytes);
    }
  }
}
