package io.kvtier.engine;

import io.kvtier.DaemonThreads;
import io.kvtier.config.KvTierConfig;
import io.kvtier.key.KeyNamespace;
import io.kvtier.transfer.PagedKvCache;
import io.kvtier.transfer.PagedLayout;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;

/**
 * Runs the save and load paths on scratch memory when a worker starts, so that the first requests
 * do not pay for class loading and the JIT's first compilations: in a fresh JVM the first save of a
 * prompt cost about as much as the next hundred, and the first disk load as much again.
 *
 * <p>Nothing of the real caches is touched: the rounds run on a scratch engine (CPU tier only, and,
 * when the real configuration has a disk tier, a second one whose CPU tier only stages chunks for a
 * scratch disk tier under {@code java.io.tmpdir}) and a scratch paged KV cache with the real
 * layout's geometry but {@value #LAYERS} layers and a few blocks, all closed and deleted after.
 * Compiled code is shared by the whole JVM, so a process warms up once ({@link #run} returns at
 * once after the first call). Best effort: a warm-up that fails is logged and changes nothing.
 */
public final class WarmUp {
  /** Layers of the scratch cache: the copy loops' shape is per layer, so two suffice. */
  static final int LAYERS = 2;

  /** Prompts saved and loaded back per scratch engine. */
  static final int PROMPTS = 24;

  /** Chunks per prompt. */
  static final int CHUNKS = 2;

  private static final System.Logger LOG = System.getLogger(WarmUp.class.getName());
  private static final AtomicBoolean DONE = new AtomicBoolean();
  private static volatile CompletableFuture<Report> background;

  private WarmUp() {}

  /**
   * What a warm-up did.
   *
   * @param prompts prompts saved and loaded back, over every scratch engine (0: skipped)
   * @param loadedTokens tokens those loads put back into the scratch cache
   * @param disk whether the disk tier's paths ran too
   * @param nanos how long it took
   */
  public record Report(int prompts, long loadedTokens, boolean disk, long nanos) {}

  /**
   * Warms the save and load paths for caches of {@code layout}, once per JVM; later calls return a
   * report of 0 prompts at once. Never throws: a failure is logged and reported as 0 prompts.
   *
   * @param config the worker's configuration (chunk size, cache policy, layerwise, disk tier)
   * @param layout one layer of the worker's paged KV cache
   * @param threads the worker's transfer threads
   */
  public static Report run(KvTierConfig config, PagedLayout layout, int threads) {
    if (!DONE.compareAndSet(false, true)) {
      return new Report(0, 0, false, 0);
    }
    long start = System.nanoTime();
    try {
      PagedLayout scratch =
          scratchLayout(layout, blocksFor(config.chunkTokens(), layout.blockSize()));
      if (scratch == null) {
        LOG.log(System.Logger.Level.DEBUG, "no warm-up: the layout's strides cannot be scaled");
        return new Report(0, 0, false, 0);
      }
      long loaded = rounds(config, scratch, threads, null);
      int prompts = PROMPTS;
      boolean disk = !config.localDiskPaths().isEmpty();
      if (disk) {
        Path dir = Files.createTempDirectory("kvtier-warmup-");
        try {
          loaded += rounds(config, scratch, threads, dir);
          prompts += PROMPTS;
        } finally {
          deleteTree(dir);
        }
      }
      Report r = new Report(prompts, loaded, disk, System.nanoTime() - start);
      LOG.log(
          System.Logger.Level.INFO,
          String.format(
              "warmed the save and load paths%s in %.0f ms",
              disk ? " (CPU and disk tiers)" : "", r.nanos() / 1e6));
      return r;
    } catch (IOException | RuntimeException e) {
      LOG.log(System.Logger.Level.WARNING, "warm-up failed (nothing else is affected): " + e, e);
      return new Report(0, 0, false, System.nanoTime() - start);
    }
  }

  /**
   * Runs {@link #run} on a background thread ({@code kvtier-warm-up}), so that a worker can warm up
   * while its host is still busy starting (vLLM allocating its KV cache) instead of after.
   *
   * @return the report, when the warm-up ends (never completes exceptionally)
   */
  public static CompletableFuture<Report> start(
      KvTierConfig config, PagedLayout layout, int threads) {
    CompletableFuture<Report> report = new CompletableFuture<>();
    background = report;
    DaemonThreads.named("kvtier-warm-up")
        .newThread(() -> report.complete(run(config, layout, threads)))
        .start();
    return report;
  }

  /**
   * Waits up to {@code timeoutMillis} for the warm-up last started by {@link #start}: its report,
   * or null if none was started or it has not ended in time.
   */
  public static Report awaitBackground(long timeoutMillis) {
    CompletableFuture<Report> report = background;
    if (report == null) {
      return null;
    }
    try {
      return report.get(timeoutMillis, java.util.concurrent.TimeUnit.MILLISECONDS);
    } catch (java.util.concurrent.TimeoutException | java.util.concurrent.ExecutionException e) {
      return null;
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return null;
    }
  }

  /**
   * {@link #start} for vLLM's CPU attention backend ({@link PagedLayout#cpuBackend}) with the
   * model's geometry, known before the KV cache exists.
   */
  public static CompletableFuture<Report> startForCpuBackend(
      KvTierConfig config, int blockSize, int heads, int headSize, int elementBytes, int threads) {
    int blocks = blocksFor(config.chunkTokens(), blockSize);
    return start(
        config, PagedLayout.cpuBackend(blocks, blockSize, heads, headSize, elementBytes), threads);
  }

  /** Blocks of {@code blockSize} tokens that hold one prompt of {@link #CHUNKS} chunks. */
  static int blocksFor(int chunkTokens, int blockSize) {
    return (CHUNKS * chunkTokens + blockSize - 1) / blockSize;
  }

  /**
   * {@code layout} with {@code blocks} blocks instead of its own: strides at or above the whole
   * block range (the K/V stride of a layout whose outermost dimension is K/V) are scaled; null if a
   * stride does not divide evenly (a layout this cannot shrink).
   */
  static PagedLayout scratchLayout(PagedLayout layout, int blocks) {
    long whole = layout.blockStride() * layout.numBlocks();
    long[] strides = {
      layout.kvStride(), layout.blockStride(), layout.slotStride(), layout.headStride()
    };
    for (int i = 0; i < strides.length; i++) {
      if (strides[i] >= whole && strides[i] > layout.blockStride()) {
        if (strides[i] % layout.numBlocks() != 0) {
          return null;
        }
        strides[i] = strides[i] / layout.numBlocks() * blocks;
      } else if (strides[i] > layout.blockStride()) {
        return null; // blocks are not the outermost dimension below K/V
      }
    }
    return new PagedLayout(
        blocks,
        layout.blockSize(),
        layout.kvCount(),
        layout.numHeads(),
        layout.headSize(),
        layout.elementBytes(),
        strides[0],
        strides[1],
        strides[2],
        strides[3]);
  }

  /**
   * Saves and loads back {@link #PROMPTS} prompts on a scratch engine; returns the tokens loaded.
   */
  private static long rounds(KvTierConfig real, PagedLayout layout, int threads, Path diskDir) {
    int chunk = real.chunkTokens();
    long tokenBytes = layout.tokenBytes() * LAYERS;
    long chunkBytes = tokenBytes * chunk;
    Map<String, Object> settings = new HashMap<>();
    settings.put("chunk_size", chunk);
    settings.put("cache_policy", real.cachePolicy().name());
    settings.put("use_layerwise", real.useLayerwise());
    // Room for every prompt: nothing is evicted, so the loads always find what was saved.
    settings.put(
        "max_local_cpu_size",
        (double) ((PROMPTS + 1L) * CHUNKS * chunkBytes + (64L << 20)) / (1L << 30));
    if (diskDir != null) {
      settings.put("local_cpu", false); // the CPU tier only stages: loads read the disk tier
      settings.put("local_disk", diskDir.toString());
      settings.put(
          "max_local_disk_size", (double) ((PROMPTS + 1L) * CHUNKS * chunkBytes * 2) / (1L << 30));
      settings.put("local_disk_lz4", real.localDiskLz4());
    }
    KeyNamespace ns =
        new KeyNamespace(
            "kvtier-warm-up",
            "warm-up",
            LAYERS,
            layout.numHeads(),
            layout.headSize(),
            1,
            0,
            chunk,
            layout.kvCount() == 1);
    int blocks = layout.numBlocks();
    int[] blockIds = new int[blocks];
    for (int b = 0; b < blocks; b++) {
      blockIds[b] = b;
    }
    SplittableRandom random = new SplittableRandom(7);
    try (Arena arena = Arena.ofShared()) {
      MemorySegment[] layers = new MemorySegment[LAYERS];
      for (int l = 0; l < LAYERS; l++) {
        layers[l] = arena.allocate(layout.tensorBytes(), 4096).fill((byte) (l + 1));
      }
      PagedKvCache cache = new PagedKvCache(layers, layout, threads);
      try (KvEngine engine = KvEngine.scratch(KvTierConfig.of(settings), ns, tokenBytes);
          KvWorker worker = new KvWorker(engine, cache, threads)) {
        if (diskDir == null) {
          warmLookupServer(engine);
        }
        int n = CHUNKS * chunk;
        long loaded = 0;
        for (int p = 0; p < PROMPTS; p++) {
          int[] tokens = random.ints(n, 0, 1 << 20).toArray();
          save(worker, tokens, blockIds, real.useLayerwise());
          if (diskDir != null && !engine.tiers().awaitIdle(10_000)) {
            throw new IllegalStateException("the scratch disk tier did not finish its writes");
          }
          int[] hit = engine.lookupAndPinTiers(p + 1, tokens, n);
          loaded += load(worker, tokens, hit[0], blockIds, real.useLayerwise());
          engine.unpinRequest(p + 1);
        }
        return loaded;
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return 0;
    }
  }

  private static void save(KvWorker worker, int[] tokens, int[] blockIds, boolean layerwise)
      throws InterruptedException {
    if (layerwise) {
      long h = worker.beginSave(tokens, tokens.length, blockIds, 0);
      for (int l = 0; l < LAYERS; l++) {
        worker.saveLayer(h, l);
      }
      worker.endSave(h, true);
    } else {
      worker.awaitTickets(
          new long[] {worker.submitSave(tokens, tokens.length, blockIds, 0)}, 10_000);
    }
  }

  /** Loads tokens {@code [0, stored - 1)} back, as vLLM would; returns the tokens loaded. */
  private static int load(
      KvWorker worker, int[] tokens, int stored, int[] blockIds, boolean layerwise)
      throws InterruptedException {
    int to = Math.max(0, stored - 1);
    if (layerwise) {
      long h = worker.beginLoad(tokens, stored, blockIds, 0, to);
      for (int l = 0; l < LAYERS; l++) {
        worker.loadLayer(h, l);
      }
      return worker.endLoad(h);
    }
    long ticket = worker.submitLoad(tokens, stored, blockIds, 0, to);
    worker.awaitTickets(new long[] {ticket}, 10_000);
    long[] done = worker.drainCompleted();
    for (int i = 0; i < done.length; i += 2) {
      if (done[i] == ticket) {
        return (int) done[i + 1];
      }
    }
    return 0;
  }

  /** Starts and closes a lookup server on a scratch socket: its classes load now, not later. */
  private static void warmLookupServer(KvEngine engine) {
    Path dir = null;
    try {
      dir = Files.createTempDirectory("kvtier-warmup-");
      LookupServer.start(engine, dir.resolve("lookup.sock")).close();
    } catch (IOException | RuntimeException e) {
      LOG.log(System.Logger.Level.DEBUG, "warm-up: scratch lookup server failed: " + e);
    } finally {
      if (dir != null) {
        deleteTree(dir);
      }
    }
  }

  private static void deleteTree(Path dir) {
    try (Stream<Path> paths = Files.walk(dir)) {
      paths.sorted(Comparator.reverseOrder()).forEach(WarmUp::deleteQuietly);
    } catch (IOException | UncheckedIOException e) {
      LOG.log(System.Logger.Level.DEBUG, "warm-up directory " + dir + " not removed: " + e);
    }
  }

  private static void deleteQuietly(Path p) {
    try {
      Files.deleteIfExists(p);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** Forgets that this JVM warmed up (tests). */
  static void reset() {
    background = null;
    DONE.set(false);
  }
}
