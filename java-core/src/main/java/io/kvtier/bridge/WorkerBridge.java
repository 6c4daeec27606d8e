package io.kvtier.bridge;

import io.kvtier.config.KvTierConfig;
import io.kvtier.cuda.CudaContext;
import io.kvtier.cuda.GpuKvCache;
import io.kvtier.cuda.PinnedHostAllocator;
import io.kvtier.engine.CacheGroups;
import io.kvtier.engine.KvEngine;
import io.kvtier.engine.KvWorker;
import io.kvtier.engine.LookupServer;
import io.kvtier.engine.WarmUp;
import io.kvtier.key.KeyExtras;
import io.kvtier.key.KeyNamespace;
import io.kvtier.memory.HostAllocator;
import io.kvtier.memory.HostMemory;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.transfer.KvCacheTransfer;
import io.kvtier.transfer.PagedKvCache;
import io.kvtier.transfer.PagedLayout;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * What the Python worker role calls: the one class it names for the engine, the worker, the paged
 * KV cache on the host or a GPU, the descriptors they are built from, key extras, host memory and
 * the lookup server. Every other core type reaches Python only as a value returned from here.
 *
 * <p>The descriptors ({@link #keyNamespace}, {@link #pagedLayout}) are built from named fields (a
 * Python {@code dict}) rather than from positional integers, so a value passed in the wrong place
 * fails with the field's name instead of building a wrong layout or namespace. Field names are
 * Python's (snake case); each method lists its fields, their types and ranges.
 *
 * <p>A facade only: each method checks its arguments and delegates; what it returns is owned by the
 * caller (close engines, workers, GPU caches and servers). Stateless and thread-safe.
 */
public final class WorkerBridge {
  /** The fields of {@link #keyNamespace}, in {@link KeyNamespace}'s order. */
  static final List<String> NAMESPACE_FIELDS =
      List.of(
          "model_id",
          "kv_dtype",
          "num_layers",
          "kv_heads_per_rank",
          "head_size",
          "tp_size",
          "tp_rank",
          "chunk_tokens",
          "mla",
          "chunk_order",
          "first_layer",
          "kv_groups");

  /** The fields of {@link #pagedLayout}, in {@link PagedLayout}'s order. */
  static final List<String> LAYOUT_FIELDS =
      List.of(
          "num_blocks",
          "block_size",
          "kv_count",
          "num_heads",
          "head_size",
          "element_bytes",
          "kv_stride",
          "block_stride",
          "slot_stride",
          "head_stride");

  private WorkerBridge() {}

  /**
   * Loads this process's configuration ({@link KvTierConfig#load}: the YAML file, {@code KVTIER_*}
   * variables, then {@code settings}).
   *
   * @throws io.kvtier.config.ConfigException on an unknown key or a malformed value
   */
  public static KvTierConfig loadConfig(Map<String, ?> settings) {
    return KvTierConfig.load(settings);
  }

  /**
   * Builds the key namespace from exactly these fields: {@code model_id}, {@code kv_dtype} and
   * {@code chunk_order} (strings; {@code token-major} or {@code head-major}), {@code num_layers},
   * {@code kv_heads_per_rank}, {@code head_size}, {@code tp_size}, {@code chunk_tokens} (integers
   * {@code >= 1}), {@code tp_rank}, {@code first_layer} (integers {@code >= 0}), {@code mla} (a
   * boolean) and {@code kv_groups} (a string, empty for one full-attention group). See {@link
   * KeyNamespace} for their meaning.
   *
   * @throws IllegalArgumentException naming the field if one is missing, unknown, of the wrong type
   *     or out of range, or if {@link KeyNamespace} refuses the combination ({@code tp_rank >=
   *     tp_size})
   */
  public static KeyNamespace keyNamespace(Map<String, ?> fields) {
    Fields f = Fields.of("KeyNamespace", fields, NAMESPACE_FIELDS);
    return new KeyNamespace(
        f.string("model_id"),
        f.string("kv_dtype"),
        f.intAtLeast("num_layers", 1),
        f.intAtLeast("kv_heads_per_rank", 1),
        f.intAtLeast("head_size", 1),
        f.intAtLeast("tp_size", 1),
        f.intAtLeast("tp_rank", 0),
        f.intAtLeast("chunk_tokens", 1),
        f.bool("mla"),
        f.string("chunk_order"),
        f.intAtLeast("first_layer", 0),
        f.string("kv_groups"));
  }

  /**
   * Builds one layer's paged KV cache layout from exactly these fields (strides in elements, see
   * {@link PagedLayout}): {@code num_blocks}, {@code block_size}, {@code num_heads}, {@code
   * head_size}, {@code element_bytes} (integers {@code >= 1}), {@code kv_count} (1 or 2), {@code
   * kv_stride} ({@code >= 0}), {@code block_stride}, {@code slot_stride}, {@code head_stride}
   * ({@code >= 1}).
   *
   * @throws IllegalArgumentException naming the field if one is missing, unknown, of the wrong type
   *     or out of range
   */
  public static PagedLayout pagedLayout(Map<String, ?> fields) {
    Fields f = Fields.of("PagedLayout", fields, LAYOUT_FIELDS);
    return new PagedLayout(
        f.intAtLeast("num_blocks", 1),
        f.intAtLeast("block_size", 1),
        f.intIn("kv_count", 1, 2),
        f.intAtLeast("num_heads", 1),
        f.intAtLeast("head_size", 1),
        f.intAtLeast("element_bytes", 1),
        f.longAtLeast("kv_stride", 0),
        f.longAtLeast("block_stride", 1),
        f.longAtLeast("slot_stride", 1),
        f.longAtLeast("head_stride", 1));
  }

  /**
   * Key extras from their words ({@link KeyExtras#of}): {@code [root_h1, root_h2, chunk0_h1,
   * chunk0_h2, ...]}; {@code null} for a plain prompt (no LoRA, multimodal items, salt or
   * embeddings).
   *
   * @throws IllegalArgumentException if {@code words} has an odd length or no root
   */
  public static KeyExtras keyExtras(long[] words) {
    return KeyExtras.of(words);
  }

  /** Anonymous page-aligned host memory, for an engine whose KV cache is in host memory. */
  public static HostAllocator mmapAllocator() {
    return MmapAllocator.INSTANCE;
  }

  /**
   * Opens an engine ({@link KvEngine#KvEngine(KvTierConfig, KeyNamespace, long, HostAllocator,
   * boolean)}); the caller closes it.
   *
   * @throws IllegalArgumentException if the chunk sizes disagree, {@code bytesPerToken <= 0}, or
   *     the CPU budget holds no chunk
   * @throws io.kvtier.config.ConfigException if the configuration asks for what cannot run
   */
  public static KvEngine openEngine(
      KvTierConfig config,
      KeyNamespace namespace,
      long bytesPerToken,
      HostAllocator allocator,
      boolean writesRemote) {
    return new KvEngine(config, namespace, bytesPerToken, allocator, writesRemote);
  }

  /** The names of {@link KvEngine#stats()}'s counters, in order. */
  public static String[] engineStatNames() {
    return KvEngine.statNames();
  }

  /**
   * Views layer tensors in host memory at raw addresses ({@link PagedKvCache#ofAddresses}); the
   * memory must outlive the result.
   *
   * @throws IllegalArgumentException if an address is 0
   */
  public static PagedKvCache hostKvCache(long[] addresses, PagedLayout layout, int threads) {
    return PagedKvCache.ofAddresses(addresses, layout, threads);
  }

  /**
   * Starts a worker that moves tokens between {@code cache} and {@code engine} on up to {@code
   * threads} background threads; the caller closes it.
   *
   * @throws IllegalArgumentException if the cache's bytes per token differ from the engine's
   */
  public static KvWorker openWorker(KvEngine engine, KvCacheTransfer cache, int threads) {
    return new KvWorker(engine, cache, threads);
  }

  /**
   * Like {@link #openWorker(KvEngine, KvCacheTransfer, int)}, for a model whose layers form {@code
   * groups} ({@link KvWorker#KvWorker(KvEngine, KvCacheTransfer, int, CacheGroups)}).
   *
   * @throws IllegalArgumentException also if the groups are not of the cache's layers
   */
  public static KvWorker openWorker(
      KvEngine engine, KvCacheTransfer cache, int threads, CacheGroups groups) {
    return new KvWorker(engine, cache, threads, groups);
  }

  /**
   * A model's KV cache groups: layer {@code l} is in group {@code layerGroups[l]}, group {@code g}
   * attends to a sliding window of {@code windows[g]} tokens (0: full attention).
   *
   * @throws IllegalArgumentException if a layer's group does not exist or a group has no layer
   */
  public static CacheGroups cacheGroups(int[] layerGroups, int[] windows) {
    return new CacheGroups(layerGroups, windows);
  }

  /**
   * Runs the save and load paths once on scratch memory shaped like {@code layout} ({@link
   * WarmUp#run}), so the first requests do not pay for the JVM's warm-up; once per JVM. Never
   * throws.
   */
  public static WarmUp.Report warmUp(KvTierConfig config, PagedLayout layout, int threads) {
    return WarmUp.run(config, layout, threads);
  }

  /**
   * Starts the warm-up of {@link #warmUp} on a background thread for vLLM's CPU attention backend
   * with the model's geometry ({@link WarmUp#startForCpuBackend}), before the KV cache exists; a
   * later {@link #warmUp} in this JVM then returns at once; {@link #awaitWarmUp} waits for it.
   * Returns at once; never throws from the warm-up itself.
   */
  public static void warmUpCpuInBackground(
      KvTierConfig config, int blockSize, int heads, int headSize, int elementBytes, int threads) {
    WarmUp.startForCpuBackend(config, blockSize, heads, headSize, elementBytes, threads);
  }

  /**
   * Waits up to {@code timeoutMillis} for the background warm-up; its report, or null if none was
   * started or it has not ended in time.
   */
  public static WarmUp.Report awaitWarmUp(long timeoutMillis) {
    return WarmUp.awaitBackground(timeoutMillis);
  }

  /** The names of {@link KvWorker#stats()}'s counters, in order. */
  public static String[] workerStatNames() {
    return KvWorker.statNames();
  }

  /**
   * Serves {@code engine}'s lookups on a Unix domain socket at {@code socketPath} ({@link
   * LookupServer#start}); blocks until it is bound. The caller closes it.
   *
   * @throws IOException if another server listens there, a non-socket file is there, or the socket
   *     cannot be bound
   */
  public static LookupServer startLookupServer(KvEngine engine, String socketPath)
      throws IOException {
    return LookupServer.start(engine, Path.of(socketPath));
  }

  /**
   * Retains CUDA device {@code ordinal}'s primary context (the one PyTorch uses).
   *
   * @throws IllegalStateException if CUDA cannot be used here
   * @throws IllegalArgumentException if there is no such device
   */
  public static CudaContext cudaContext(int ordinal) {
    return CudaContext.primary(ordinal);
  }

  /** Pinned host memory of {@code context}, for an engine whose KV cache is on that GPU. */
  public static PinnedHostAllocator pinnedAllocator(CudaContext context) {
    return new PinnedHostAllocator(context);
  }

  /**
   * Binds vLLM's per-layer KV tensors on a GPU ({@link GpuKvCache}); {@code gatherMode} and {@code
   * scatterMode} are {@code mapped} or {@code dma}. The caller closes it.
   *
   * @throws IllegalArgumentException on a mode that is neither, an address of 0, or a layout that
   *     does not fit the tensors
   */
  public static GpuKvCache gpuKvCache(
      CudaContext context,
      long[] layerAddresses,
      PagedLayout layout,
      PinnedHostAllocator pinned,
      String gatherMode,
      String scatterMode) {
    return new GpuKvCache(
        context,
        layerAddresses,
        layout,
        pinned,
        GpuKvCache.Mode.parse(gatherMode),
        GpuKvCache.Mode.parse(scatterMode));
  }

  /**
   * Copies {@code byteCount} bytes between caller-owned host buffers on the calling thread ({@link
   * HostMemory#copy}). Blocks until done.
   *
   * @throws IllegalArgumentException on an address of 0 or a negative count
   */
  public static void copy(long srcAddress, long dstAddress, long byteCount) {
    HostMemory.copy(srcAddress, dstAddress, byteCount);
  }

  /**
   * Like {@link #copy}, split over up to {@code threads} threads of the copy pool ({@link
   * HostMemory#copyParallel}); the ranges must not overlap. Blocks until done.
   *
   * @throws IllegalArgumentException on an address of 0, a negative count, {@code threads <= 0} or
   *     overlapping ranges
   * @throws IllegalStateException if the calling thread is interrupted
   */
  public static void copyParallel(long srcAddress, long dstAddress, long byteCount, int threads) {
    HostMemory.copyParallel(srcAddress, dstAddress, byteCount, threads);
  }

  /**
   * The CRC-32 of {@code byteCount} bytes at {@code address} ({@link HostMemory#crc32}).
   *
   * @throws IllegalArgumentException on an address of 0 or a negative count
   */
  public static long crc32(long address, long byteCount) {
    return HostMemory.crc32(address, byteCount);
  }

  /**
   * Writes the test pattern {@code byte[i] = (i * 131 + seed) mod 256} ({@link
   * HostMemory#fillPattern}).
   *
   * @throws IllegalArgumentException on an address of 0, a negative count or a negative seed
   */
  public static void fillPattern(long address, long byteCount, long seed) {
    HostMemory.fillPattern(address, byteCount, seed);
  }
}
