package io.kvtier.transfer;

import static io.kvtier.Checks.checkPositive;

/**
 * Where a token's K and V live in one layer's paged KV cache tensor, as element strides, so one
 * gather/scatter serves every layout vLLM uses.
 *
 * <p>Element {@code (kv, block, slotInBlock, head, d)} is at {@code kv * kvStride + block *
 * blockStride + slotInBlock * slotStride + head * headStride + d} (in elements of {@code
 * elementBytes}); {@code d} is always contiguous. The factories name the layouts:
 *
 * <pre>
 *   flashAttnNhd  [2, blocks, blockSize, heads, headSize]   (vLLM FlashAttention, NHD)
 *   flashAttnHnd  [2, blocks, heads, blockSize, headSize]   (HND)
 *   flashInfer    [blocks, 2, blockSize, heads, headSize]
 *   mla           [blocks, blockSize, headSize]             (one latent vector per token)
 *   cpuBackend    [blocks, heads, 2, blockSize, headSize]   (vLLM CPU_ATTN; seen in 0.32)
 *   splitKv       [blocks, heads, blockSize, 2 * headSize]  (vLLM 0.32 GPU backends, any order)
 * </pre>
 *
 * A chunk holds, per layer, {@link #tokenBytes()} per token, in the order that keeps copies long
 * for the layout ({@link #headMajorChunk()}): {@code [kv][token][head][d]} where a slot's heads are
 * adjacent (NHD, FlashInfer, MLA), {@code [kv][head][token][d]} where a head's tokens are adjacent
 * within a block (HND, and vLLM's CPU backend). The order is part of what makes chunk bytes
 * interchangeable, so it belongs in the key namespace. Immutable.
 */
public record PagedLayout(
    int numBlocks,
    int blockSize,
    int kvCount,
    int numHeads,
    int headSize,
    int elementBytes,
    long kvStride,
    long blockStride,
    long slotStride,
    long headStride) {

  /**
   * Validates the geometry.
   *
   * @throws IllegalArgumentException naming the first bad field
   */
  public PagedLayout {
    checkPositive(numBlocks, "numBlocks");
    checkPositive(blockSize, "blockSize");
    checkPositive(numHeads, "numHeads");
    checkPositive(headSize, "headSize");
    checkPositive(elementBytes, "elementBytes");
    if (kvCount != 1 && kvCount != 2) {
      throw new IllegalArgumentException("kvCount must be 1 (MLA) or 2 (K and V), got " + kvCount);
    }
    if (kvStride < 0 || blockStride <= 0 || slotStride <= 0 || headStride <= 0) {
      throw new IllegalArgumentException(
          "strides must be positive (kv "
              + kvStride
              + ", block "
              + blockStride
              + ", slot "
              + slotStride
              + ", head "
              + headStride
              + ")");
    }
  }

  /**
   * vLLM's attention backends on GPU (0.32 on): each layer's cache is viewed as {@code [blocks,
   * heads, blockSize, 2 * headSize]}, a token's K vector then its V vector in the last dimension,
   * in any physical order of the first three dimensions ({@code blockStride}, {@code headStride},
   * {@code slotStride} in elements, as {@code tensor.stride()} gives them). NHD, HND and the
   * cross-layer orders differ only in those strides.
   */
  public static PagedLayout splitKv(
      int blocks,
      int blockSize,
      int heads,
      int headSize,
      int elementBytes,
      long blockStride,
      long headStride,
      long slotStride) {
    return new PagedLayout(
        blocks,
        blockSize,
        2,
        heads,
        headSize,
        elementBytes,
        headSize,
        blockStride,
        slotStride,
        headStride);
  }

  public static PagedLayout flashAttnNhd(
      int blocks, int blockSize, int heads, int headSize, int elementBytes) {
    long slot = (long) heads * headSize;
    long block = slot * blockSize;
    return new PagedLayout(
        blocks, blockSize, 2, heads, headSize, elementBytes, block * blocks, block, slot, headSize);
  }

  public static PagedLayout flashAttnHnd(
      int blocks, int blockSize, int heads, int headSize, int elementBytes) {
    long head = (long) blockSize * headSize;
    long block = head * heads;
    return new PagedLayout(
        blocks, blockSize, 2, heads, headSize, elementBytes, block * blocks, block, headSize, head);
  }

  public static PagedLayout flashInfer(
      int blocks, int blockSize, int heads, int headSize, int elementBytes) {
    long slot = (long) heads * headSize;
    long kv = slot * blockSize;
    return new PagedLayout(
        blocks, blockSize, 2, heads, headSize, elementBytes, kv, 2 * kv, slot, headSize);
  }

  /**
   * vLLM's CPU attention backend: per layer {@code [blocks, heads, blockSize, 2 * headSize]}, read
   * by vLLM as {@code [blocks, heads, 2 * blockSize, headSize]}: per block and head, the block's K
   * rows, then its V rows (as registered by vLLM 0.32.0 on CPU).
   */
  public static PagedLayout cpuBackend(
      int blocks, int blockSize, int heads, int headSize, int elementBytes) {
    long kv = (long) blockSize * headSize;
    long head = 2 * kv;
    return new PagedLayout(
        blocks, blockSize, 2, heads, headSize, elementBytes, kv, head * heads, headSize, head);
  }

  public static PagedLayout mla(int blocks, int blockSize, int headSize, int elementBytes) {
    long block = (long) blockSize * headSize;
    return new PagedLayout(
        blocks, blockSize, 1, 1, headSize, elementBytes, 0, block, headSize, headSize);
  }

  /**
   * Bytes one layer's view spans from its first element: one past its furthest element. For a dense
   * tensor this is its size; for a strided view (HND as a permuted view, or one layer of a
   * cross-layer tensor) it is how far the view reaches.
   */
  public long tensorBytes() {
    long last =
        (kvCount - 1) * kvStride
            + (numBlocks - 1L) * blockStride
            + (blockSize - 1L) * slotStride
            + (numHeads - 1L) * headStride
            + headSize;
    return last * elementBytes;
  }

  /** Bytes one token takes in a chunk, for one layer (K and V, every head). */
  public long tokenBytes() {
    return (long) kvCount * numHeads * headSize * elementBytes;
  }

  /** Whether a slot's heads are adjacent ({@code [.., slot, head, d]}): one copy per slot run. */
  boolean headsContiguous() {
    return headStride == headSize && slotStride == (long) numHeads * headSize;
  }

  /**
   * Whether chunks are laid out {@code [kv][head][token][d]}: true where a head's consecutive
   * tokens are adjacent in the cache ({@code slotStride == headSize}, heads further apart).
   */
  public boolean headMajorChunk() {
    return !headsContiguous() && slotStride == headSize && numHeads > 1;
  }

  /** The chunk order's name, for the key namespace: {@code token-major} or {@code head-major}. */
  public String chunkOrder() {
    return headMajorChunk() ? "head-major" : "token-major";
  }

  /** Total slots in the tensor. */
  public long slots() {
    return (long) numBlocks * blockSize;
  }
}
