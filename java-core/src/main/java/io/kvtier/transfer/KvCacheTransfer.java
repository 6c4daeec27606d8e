package io.kvtier.transfer;

import java.lang.foreign.MemorySegment;

/**
 * Moves a request's tokens between a paged KV cache (one tensor per layer, addressed by a block
 * table) and kvtier's chunks: {@link PagedKvCache} for a cache in host memory, the CUDA package's
 * for one on a GPU.
 *
 * <p>A chunk of {@code n} tokens holds every layer in turn: layer {@code l} starts at {@code l * n
 * * layout().tokenBytes()} and is laid out as {@link HostKvTransfer} writes one layer. Prompt token
 * {@code t} lives in slot {@code blockIds[t / blockSize] * blockSize + t % blockSize}.
 *
 * <p>Copies may be asynchronous: a chunk written by {@link #gather} may be read only after the
 * calling thread's {@link #completeGathers} returned, and one read by {@link #scatter} may be
 * reused only after its {@link #completeScatters} returned. The two are apart so a thread that
 * loads one request while saving another waits only for what it needs. Implementations are
 * thread-safe as long as callers do not move the same tokens concurrently.
 */
public interface KvCacheTransfer {
  int layerCount();

  PagedLayout layout();

  /** Bytes one token takes in a chunk, every layer included. */
  default long tokenBytes() {
    return layerCount() * layout().tokenBytes();
  }

  /**
   * Copies prompt tokens {@code [firstToken, firstToken + count)} of every layer into {@code chunk}
   * (a chunk of {@code count} tokens).
   *
   * @throws IllegalArgumentException if the block table does not cover the tokens, a block id is
   *     outside the cache, or the chunk is too small
   */
  void gather(int[] blockIds, int firstToken, int count, MemorySegment chunk);

  /** {@link #gather} of one layer only (layerwise saves). */
  void gatherLayer(int layer, int[] blockIds, int firstToken, int count, MemorySegment chunk);

  /**
   * Whether {@link #scatter} and {@link #moveLayers} may run on many threads at once, each chunk's
   * copy complete when the call returns, at no cost per thread: a load then copies each chunk a
   * lower tier reads on the thread that read it, while later chunks are still being read. False
   * (this default) where each thread needs resources of its own (a GPU cache's streams and staging
   * buffers): such loads copy once every chunk has been read.
   */
  default boolean copiesOnReadingThreads() {
    return false;
  }

  /**
   * Copies tokens {@code [skip, skip + count)} of a stored chunk of {@code rowTokens} tokens, whose
   * token 0 is prompt token {@code chunkStart}, into every layer's slots.
   *
   * @throws IllegalArgumentException as {@link #gather}, or if the range is outside the chunk
   */
  void scatter(
      MemorySegment chunk, int rowTokens, int[] blockIds, int chunkStart, int skip, int count);

  /** {@link #scatter} of one layer only (layerwise loads). */
  void scatterLayer(
      int layer,
      MemorySegment chunk,
      int rowTokens,
      int[] blockIds,
      int chunkStart,
      int skip,
      int count);

  /**
   * Moves tokens {@code [skip, skip + count)} of a chunk of {@code rowTokens} tokens, whose token 0
   * is prompt token {@code chunkStart}, between the chunk and the slots of the given {@code layers}
   * (indices in {@code 0..layerCount()-1}, any order, no repeats) under {@code blockIds}: into the
   * cache with {@code toCache}, out of it otherwise (then as {@link #gather} does, a gather to be
   * completed with {@link #completeGathers}). For a model whose layers form groups, each with its
   * own block table ({@code io.kvtier.engine.CacheGroups}).
   *
   * @throws IllegalArgumentException as {@link #scatter}, or for a layer outside the cache
   */
  void moveLayers(
      boolean toCache,
      int[] layers,
      MemorySegment chunk,
      int rowTokens,
      int[] blockIds,
      int chunkStart,
      int skip,
      int count);

  /**
   * Waits until every gather the calling thread started has finished. The default does nothing (for
   * implementations whose copies finish before they return).
   *
   * @throws RuntimeException if one of those copies failed (its chunks must not be used)
   */
  default void completeGathers() {}

  /** As {@link #completeGathers}, for scatters. */
  default void completeScatters() {}

  /**
   * Returns {@code layer} if it is one of {@code layerCount} layers.
   *
   * @throws IllegalArgumentException otherwise
   */
  static int checkLayer(int layer, int layerCount) {
    if (layer < 0 || layer >= layerCount) {
      throw new IllegalArgumentException("layer " + layer + " is outside 0.." + (layerCount - 1));
    }
    return layer;
  }

  /**
   * The slots of prompt tokens {@code [first, first + count)} under the block table.
   *
   * @throws IllegalArgumentException if the table is too short or a block id is out of range
   */
  static long[] slots(PagedLayout layout, int[] blockIds, int first, int count) {
    int bs = layout.blockSize();
    if (first < 0 || count < 0) {
      throw new IllegalArgumentException("bad token range " + first + " + " + count);
    }
    long last = (long) first + count;
    if (count > 0 && (last - 1) / bs >= blockIds.length) {
      throw new IllegalArgumentException(
          "tokens up to "
              + last
              + " need "
              + ((last - 1) / bs + 1)
              + " blocks; the block table has "
              + blockIds.length);
    }
    long[] slots = new long[count];
    for (int i = 0; i < count; i++) {
      int t = first + i;
      int block = blockIds[t / bs];
      if (block < 0 || block >= layout.numBlocks()) {
        throw new IllegalArgumentException(
            "block id " + block + " is outside 0.." + (layout.numBlocks() - 1));
      }
      slots[i] = (long) block * bs + t % bs;
    }
    return slots;
  }
}
