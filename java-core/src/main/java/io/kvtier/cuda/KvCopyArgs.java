package io.kvtier.cuda;

import io.kvtier.transfer.PagedLayout;

/**
 * The arguments and launch shape of one gather or scatter kernel launch ({@code kv_copy.cu}):
 * {@code count} tokens of layers {@code [firstLayer, firstLayer + layerCount)}, token {@code t} in
 * cache slot {@code slots[t]} and in row {@code skip + t} of a chunk of {@code rowTokens} rows.
 * Strides are in bytes.
 *
 * <p>{@link #vectorWidth} is the widest load the kernel may use: every address, stride and head
 * vector must be a multiple of it. Pure arithmetic, shared by the launch and its CPU model.
 */
public record KvCopyArgs(
    int firstLayer,
    int layerCount,
    int kvCount,
    long kvStride,
    long blockStride,
    long slotStride,
    long headStride,
    int numHeads,
    int headRow,
    int blockSize,
    int rowTokens,
    int skip,
    boolean headMajor,
    int count,
    int vectorWidth,
    int threads) {

  /** Widest vector the kernels have, in bytes. */
  static final int MAX_WIDTH = 16;

  /** Most threads per CUDA block. */
  static final int MAX_THREADS = 256;

  /** Most CUDA blocks along grid y (layers times K/V). */
  static final int MAX_GRID_Y = 65_535;

  /**
   * Plans a launch.
   *
   * @param addresses every address the launch touches (the layer views' bases and the chunks'), or
   *     values OR-ed together from them: only their low bits count
   * @throws IllegalArgumentException if the range is empty or outside the chunk, or the grid would
   *     be too large
   */
  public static KvCopyArgs plan(
      PagedLayout l,
      int firstLayer,
      int layerCount,
      int rowTokens,
      int skip,
      int count,
      long... addresses) {
    if (count <= 0 || skip < 0 || skip + count > rowTokens) {
      throw new IllegalArgumentException(
          "tokens [" + skip + ", " + (skip + count) + ") outside a chunk of " + rowTokens);
    }
    if ((long) layerCount * l.kvCount() > MAX_GRID_Y) {
      throw new IllegalArgumentException(layerCount + " layers exceed one launch's grid");
    }
    long e = l.elementBytes();
    long headRow = l.headSize() * e;
    long widthOf =
        headRow | l.kvStride() * e | l.blockStride() * e | l.slotStride() * e | l.headStride() * e;
    for (long a : addresses) {
      widthOf |= a;
    }
    int width = MAX_WIDTH;
    while (width > 1 && (widthOf & (width - 1)) != 0) {
      width >>= 1;
    }
    long units = headRow / width * l.numHeads();
    int threads = (int) Math.min(MAX_THREADS, (units + 31) / 32 * 32);
    return new KvCopyArgs(
        firstLayer,
        layerCount,
        l.kvCount(),
        l.kvStride() * e,
        l.blockStride() * e,
        l.slotStride() * e,
        l.headStride() * e,
        l.numHeads(),
        (int) headRow,
        l.blockSize(),
        rowTokens,
        skip,
        l.headMajorChunk(),
        count,
        width,
        threads);
  }

  /** Grid y: one CUDA block row per layer and K/V. */
  public int gridY() {
    return layerCount * kvCount;
  }

  /** Bytes one token takes in a chunk, per layer. */
  public long tokenBytes() {
    return (long) kvCount * numHeads * headRow;
  }

  /** Offset, in its layer view, of (kv, slot, head): what the kernel adds to the layer's base. */
  public long cacheOffset(int kv, long slot, int head) {
    return kv * kvStride
        + slot / blockSize * blockStride
        + slot % blockSize * slotStride
        + head * headStride;
  }

  /** Offset, in the chunk, of (layer, kv, row, head): what the kernel adds to the chunk's base. */
  public long chunkOffset(int layer, int kv, int row, int head) {
    long layerBase = (long) layer * rowTokens * tokenBytes();
    if (headMajor) {
      return layerBase + (((long) kv * numHeads + head) * rowTokens + row) * headRow;
    }
    return layerBase + (((long) kv * rowTokens + row) * numHeads + head) * headRow;
  }
}
