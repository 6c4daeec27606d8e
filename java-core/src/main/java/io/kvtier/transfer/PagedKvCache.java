package io.kvtier.transfer;

import io.kvtier.bridge.HostMemory;
import java.lang.foreign.MemorySegment;
import java.util.Objects;

/**
 * A model's paged KV cache in host memory — one tensor per layer, all of one {@link PagedLayout} —
 * addressed by a request's block table, and the chunk layout its tokens are stored in.
 *
 * <p>A chunk of {@code n} tokens holds every layer in turn: layer {@code l} starts at {@code l * n
 * * layout.tokenBytes()} and is laid out as {@link HostKvTransfer} writes one layer. Prompt token
 * {@code t} lives in slot {@code blockIds[t / blockSize] * blockSize + t % blockSize}.
 *
 * <p>Immutable; thread-safe as long as callers do not move the same tokens concurrently.
 */
public final class PagedKvCache {
  private final MemorySegment[] layers;
  private final PagedLayout layout;
  private final int threads;

  /**
   * Views {@code layers} (one segment per layer, in model order).
   *
   * @throws IllegalArgumentException if there is no layer or a segment is smaller than the layout
   */
  public PagedKvCache(MemorySegment[] layers, PagedLayout layout) {
    this(layers, layout, 1);
  }

  /**
   * Like {@link #PagedKvCache(MemorySegment[], PagedLayout)}; whole-chunk {@link #gather} and
   * {@link #scatter} split the layers over {@code threads} threads (the caller's and the shared
   * copy pool's).
   *
   * @throws IllegalArgumentException also if {@code threads <= 0}
   */
  public PagedKvCache(MemorySegment[] layers, PagedLayout layout, int threads) {
    this.threads = io.kvtier.Checks.checkPositive(threads, "threads");
    this.layout = Objects.requireNonNull(layout, "layout");
    if (layers.length == 0) {
      throw new IllegalArgumentException("a KV cache needs at least one layer");
    }
    for (int l = 0; l < layers.length; l++) {
      if (layers[l].byteSize() < layout.tensorBytes()) {
        throw new IllegalArgumentException(
            "layer "
                + l
                + " has "
                + layers[l].byteSize()
                + " bytes; the layout needs "
                + layout.tensorBytes());
      }
    }
    this.layers = layers.clone();
  }

  /**
   * Views layer tensors at raw host addresses (vLLM's {@code tensor.data_ptr()} on the CPU
   * backend), each {@code layout.tensorBytes()} long. The memory must outlive this object.
   *
   * @throws IllegalArgumentException if an address is 0
   */
  public static PagedKvCache ofAddresses(long[] addresses, PagedLayout layout, int threads) {
    MemorySegment[] segs = new MemorySegment[addresses.length];
    for (int l = 0; l < addresses.length; l++) {
      if (addresses[l] == 0) {
        throw new IllegalArgumentException("layer " + l + " has address 0");
      }
      segs[l] = HostMemory.view(addresses[l], layout.tensorBytes());
    }
    return new PagedKvCache(segs, layout, threads);
  }

  public int layerCount() {
    return layers.length;
  }

  public PagedLayout layout() {
    return layout;
  }

  /** Bytes one token takes in a chunk: every layer, K and V. */
  public long tokenBytes() {
    return layers.length * layout.tokenBytes();
  }

  /**
   * Copies prompt tokens {@code [firstToken, firstToken + count)} of every layer into {@code chunk}
   * (a chunk of {@code count} tokens).
   *
   * @throws IllegalArgumentException if the block table does not cover the tokens, a block id is
   *     outside the cache, or the chunk is too small
   */
  public void gather(int[] blockIds, int firstToken, int count, MemorySegment chunk) {
    long[] slots = slots(blockIds, firstToken, count);
    forLayers(l -> moveLayer(l, slots, chunk, count, 0, count, false));
  }

  /** {@link #gather} of one layer only (layerwise saves). */
  public void gatherLayer(
      int layer, int[] blockIds, int firstToken, int count, MemorySegment chunk) {
    moveLayer(checkLayer(layer), slots(blockIds, firstToken, count), chunk, count, 0, count, false);
  }

  /**
   * Copies tokens {@code [skip, skip + count)} of a stored chunk of {@code rowTokens} tokens, whose
   * token 0 is prompt token {@code chunkStart}, into every layer's slots.
   *
   * @throws IllegalArgumentException as {@link #gather}, or if the range is outside the chunk
   */
  public void scatter(
      MemorySegment chunk, int rowTokens, int[] blockIds, int chunkStart, int skip, int count) {
    long[] slots = slots(blockIds, chunkStart + skip, count);
    forLayers(l -> moveLayer(l, slots, chunk, rowTokens, skip, count, true));
  }

  /** Runs {@code move} for every layer, the layers split in contiguous runs over the threads. */
  private void forLayers(java.util.function.IntConsumer move) {
    int parts = Math.min(threads, layers.length);
    if (parts == 1) {
      for (int l = 0; l < layers.length; l++) {
        move.accept(l);
      }
      return;
    }
    Runnable[] tasks = new Runnable[parts];
    for (int p = 0; p < parts; p++) {
      int from = p * layers.length / parts;
      int to = (p + 1) * layers.length / parts;
      tasks[p] =
          () -> {
            for (int l = from; l < to; l++) {
              move.accept(l);
            }
          };
    }
    HostMemory.runParallel(tasks);
  }

  /** {@link #scatter} of one layer only (layerwise loads). */
  public void scatterLayer(
      int layer,
      MemorySegment chunk,
      int rowTokens,
      int[] blockIds,
      int chunkStart,
      int skip,
      int count) {
    long[] slots = slots(blockIds, chunkStart + skip, count);
    moveLayer(checkLayer(layer), slots, chunk, rowTokens, skip, count, true);
  }

  private void moveLayer(
      int layer,
      long[] slots,
      MemorySegment chunk,
      int rowTokens,
      int skip,
      int count,
      boolean toCache) {
    long offset = layer * rowTokens * layout.tokenBytes();
    HostKvTransfer.copyRange(
        layers[layer], layout, slots, 0, count, chunk, offset, rowTokens, skip, toCache);
  }

  private int checkLayer(int layer) {
    if (layer < 0 || layer >= layers.length) {
      throw new IllegalArgumentException(
          "layer " + layer + " is outside 0.." + (layers.length - 1));
    }
    return layer;
  }

  /**
   * The slots of prompt tokens {@code [first, first + count)} under the block table.
   *
   * @throws IllegalArgumentException if the table is too short or a block id is out of range
   */
  long[] slots(int[] blockIds, int first, int count) {
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
