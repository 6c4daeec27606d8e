package io.kvtier.transfer;

import io.kvtier.memory.HostMemory;
import java.lang.foreign.MemorySegment;
import java.util.Objects;

/**
 * A model's paged KV cache in host memory — one tensor per layer, all of one {@link PagedLayout}
 * (vLLM's CPU backend) — with the chunk layout of {@link KvCacheTransfer}. Copies finish before the
 * methods return.
 *
 * <p>Immutable; thread-safe as long as callers do not move the same tokens concurrently.
 */
public final class PagedKvCache implements KvCacheTransfer {
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

  @Override
  public int layerCount() {
    return layers.length;
  }

  @Override
  public PagedLayout layout() {
    return layout;
  }

  @Override
  public void gather(int[] blockIds, int firstToken, int count, MemorySegment chunk) {
    long[] slots = slots(blockIds, firstToken, count);
    forLayers(l -> moveLayer(l, slots, chunk, count, 0, count, false));
  }

  @Override
  public void gatherLayer(
      int layer, int[] blockIds, int firstToken, int count, MemorySegment chunk) {
    moveLayer(checkLayer(layer), slots(blockIds, firstToken, count), chunk, count, 0, count, false);
  }

  @Override
  public void scatter(
      MemorySegment chunk, int rowTokens, int[] blockIds, int chunkStart, int skip, int count) {
    long[] slots = slots(blockIds, chunkStart + skip, count);
    forLayers(l -> moveLayer(l, slots, chunk, rowTokens, skip, count, true));
  }

  /** Host copies: synchronous, on any thread, nothing kept per thread. */
  @Override
  public boolean copiesOnReadingThreads() {
    return true;
  }

  @Override
  public void moveLayers(
      boolean toCache,
      int[] layerIds,
      MemorySegment chunk,
      int rowTokens,
      int[] blockIds,
      int chunkStart,
      int skip,
      int count) {
    for (int l : layerIds) {
      checkLayer(l);
    }
    long[] slots = slots(blockIds, chunkStart + skip, count);
    forLayers(
        layerIds.length,
        i -> moveLayer(layerIds[i], slots, chunk, rowTokens, skip, count, toCache));
  }

  /** Runs {@code move} for every layer, the layers split in contiguous runs over the threads. */
  private void forLayers(java.util.function.IntConsumer move) {
    forLayers(layers.length, move);
  }

  /** Runs {@code move} for {@code 0..n-1}, split in contiguous runs over the threads. */
  private void forLayers(int n, java.util.function.IntConsumer move) {
    int parts = Math.min(threads, n);
    if (parts <= 1) {
      for (int l = 0; l < n; l++) {
        move.accept(l);
      }
      return;
    }
    Runnable[] tasks = new Runnable[parts];
    for (int p = 0; p < parts; p++) {
      int from = p * n / parts;
      int to = (p + 1) * n / parts;
      tasks[p] =
          () -> {
            for (int l = from; l < to; l++) {
              move.accept(l);
            }
          };
    }
    HostMemory.runParallel(tasks);
  }

  @Override
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
    return KvCacheTransfer.checkLayer(layer, layers.length);
  }

  long[] slots(int[] blockIds, int first, int count) {
    return KvCacheTransfer.slots(layout, blockIds, first, count);
  }
}
