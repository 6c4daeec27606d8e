package io.kvtier.engine;

import static io.kvtier.Checks.checkNonNegative;
import static io.kvtier.Checks.checkPositive;

import io.kvtier.DaemonThreads;
import io.kvtier.config.KvTierConfig;
import io.kvtier.key.ChunkHasher;
import io.kvtier.key.ChunkKey;
import io.kvtier.key.KeyExtras;
import io.kvtier.key.KeyNamespace;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.HostAllocator;
import io.kvtier.memory.HostMemory;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.store.KvStore;
import io.kvtier.store.StoreStats;
import io.kvtier.store.TieredStore;
import io.kvtier.store.Tiers;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongSupplier;
import java.util.function.ObjIntConsumer;

/**
 * The facade the Python connector calls: lookups, stores and loads of a prompt's chunks, in
 * primitives and arrays, one call per prompt or batch.
 *
 * <p>A prompt is given as {@code int[] tokens} with a {@code tokenCount} (the array may be longer).
 * Chunk {@code c} covers tokens {@code [c * chunk_size, min((c + 1) * chunk_size, tokenCount))};
 * its bytes are {@code tokens in chunk * bytesPerToken}, laid out as the caller chooses (the data
 * movers define the layout; the engine moves opaque bytes).
 *
 * <p>Two-phase operations return a handle:
 *
 * <pre>
 *   prepareStore(tokens) -> [handle, addr_0, ...]   write chunk bytes at each non-zero address
 *   completeStore(handle, ok)                        ok: chunks become visible; !ok: discarded
 *   prepareLoad(tokens)  -> [handle, addr_0, ...]   read chunk bytes; they cannot be evicted
 *   completeLoad(handle)                             buffers released
 * </pre>
 *
 * A chunk is visible to lookups only after {@code completeStore(handle, true)}; a handle that is
 * never completed leaks its buffers until {@link #close()}.
 *
 * <p>Failures inside the engine do not throw on the data path: an exhausted pool drops the store
 * (counted), a read error is a miss (counted). Bad arguments (wrong sizes, unknown handles, use
 * after close) throw {@link IllegalArgumentException} or {@link IllegalStateException}.
 *
 * <p>Thread-safe.
 */
public final class KvEngine implements AutoCloseable {
  private static final System.Logger LOG = System.getLogger(KvEngine.class.getName());

  private final KvTierConfig config;
  private final KeyNamespace namespace;
  private final long namespaceId;
  private final long bytesPerToken;
  private final int chunkTokens;
  private final boolean partialChunks;
  private final ChunkPool pool;
  private final TieredStore tiers;
  private final AtomicLong nextHandle = new AtomicLong(1);
  private volatile ChunkEvents events; // null until enableEvents

  /** The Python bridge's open transactions, by handle ({@link #prepareStore}, ...). */
  private final Map<Long, StoreTransaction> pendingStores = new ConcurrentHashMap<>();

  private final Map<Long, LoadTransaction> pendingLoads = new ConcurrentHashMap<>();
  private final PinLeases pins;
  private final RemoteLookups remoteLookups;

  /** Keys with a prepared store not yet completed (not visible yet, but soon). */
  private final Set<ChunkKey> storing = ConcurrentHashMap.newKeySet();

  /**
   * The chunks that also serve shorter block-aligned prefixes of themselves ({@link
   * #useBlockSize}).
   */
  private final BlockIndex blockIndex;

  /**
   * vLLM's block size once known ({@link #useBlockSize}); the chunk size until then, which makes
   * hits whole chunks.
   */
  private volatile int blockTokens;

  /**
   * With {@link #useSlidingWindow}: {@code [window, blockSize]} of a model whose every layer
   * slides; null otherwise.
   */
  private volatile int[] slidingWindow;

  private final ScheduledExecutorService pinMonitor;
  private final LongAdder lookupTokens = new LongAdder();
  private final LongAdder hitTokens = new LongAdder();
  private volatile boolean closed;

  /**
   * Opens an engine with the configuration of this process ({@link KvTierConfig#load}) and the
   * given overrides.
   *
   * @param overrides per-instance settings (vLLM's {@code kv_connector_extra_config})
   * @param bytesPerToken bytes one token's KV occupies in a chunk (all layers, K and V)
   * @throws io.kvtier.config.ConfigException on bad configuration
   * @throws IllegalArgumentException on a bad layout value
   */
  public static KvEngine open(
      Map<String, ?> overrides, KeyNamespace namespace, long bytesPerToken) {
    return new KvEngine(
        KvTierConfig.load(overrides), namespace, bytesPerToken, MmapAllocator.INSTANCE);
  }

  /**
   * Creates an engine; {@code namespace.chunkTokens()} must equal the configured chunk size.
   *
   * @throws IllegalArgumentException if the chunk sizes disagree, {@code bytesPerToken <= 0}, or
   *     the CPU budget holds no chunk
   * @throws io.kvtier.config.ConfigException if the configuration asks for what cannot run
   */
  public KvEngine(
      KvTierConfig config, KeyNamespace namespace, long bytesPerToken, HostAllocator allocator) {
    this(config, namespace, bytesPerToken, allocator, true);
  }

  /**
   * Like {@link #KvEngine(KvTierConfig, KeyNamespace, long, HostAllocator)}; with {@code
   * writesRemote} false the remote store is read but never written (MLA: the tensor-parallel ranks
   * hold the same KV, and only the first one sends it).
   */
  public KvEngine(
      KvTierConfig config,
      KeyNamespace namespace,
      long bytesPerToken,
      HostAllocator allocator,
      boolean writesRemote) {
    this(config, namespace, bytesPerToken, allocator, System::nanoTime, true, writesRemote, true);
  }

  /**
   * Like the public constructor, with the clock pins are timed by and whether the background pin
   * monitor runs (tests pass a fake clock and call {@link #expirePins()} themselves).
   */
  KvEngine(
      KvTierConfig config,
      KeyNamespace namespace,
      long bytesPerToken,
      HostAllocator allocator,
      LongSupplier nanoClock,
      boolean startPinMonitor) {
    this(config, namespace, bytesPerToken, allocator, nanoClock, startPinMonitor, true, true);
  }

  /**
   * An engine for scratch work ({@link WarmUp}): no pin monitor, and its configuration is not
   * logged (it is not one the user wrote).
   */
  static KvEngine scratch(KvTierConfig config, KeyNamespace namespace, long bytesPerToken) {
    return new KvEngine(
        config,
        namespace,
        bytesPerToken,
        io.kvtier.memory.MmapAllocator.INSTANCE,
        System::nanoTime,
        false,
        true,
        false);
  }

  private KvEngine(
      KvTierConfig config,
      KeyNamespace namespace,
      long bytesPerToken,
      HostAllocator allocator,
      LongSupplier nanoClock,
      boolean startPinMonitor,
      boolean writesRemote,
      boolean logConfig) {
    this.config = config;
    this.namespace = namespace;
    this.namespaceId = namespace.id();
    this.bytesPerToken = checkPositive(bytesPerToken, "bytesPerToken");
    this.chunkTokens = config.chunkTokens();
    this.partialChunks = config.saveUnfullChunk();
    if (namespace.chunkTokens() != chunkTokens) {
      throw new IllegalArgumentException(
          "namespace chunk size "
              + namespace.chunkTokens()
              + " differs from chunk_size="
              + chunkTokens);
    }
    if (logConfig) {
      LOG.log(System.Logger.Level.INFO, config.describeSettings());
    }
    // The settings' notices once per instance: by the first rank of the first pipeline stage.
    if (logConfig && namespace.tpRank() == 0 && namespace.firstLayer() == 0) {
      for (io.kvtier.config.LmCacheKeys.Notice n : config.notices()) {
        LOG.log(
            n.level() == io.kvtier.config.LmCacheKeys.Level.WARNING
                ? System.Logger.Level.WARNING
                : System.Logger.Level.INFO,
            n.text());
      }
    }

    long chunkBytes = Math.multiplyExact(chunkTokens, bytesPerToken);
    ChunkPool slots =
        new ChunkPool(
            allocator, chunkBytes, config.maxLocalCpuBytes(), ChunkPool.DEFAULT_SLAB_BYTES);
    try {
      slots.warmUp();
      this.tiers = Tiers.open(config, slots, namespace.tpRank(), writesRemote);
    } catch (RuntimeException | Error e) { // a tier that cannot start: nothing stays mapped
      slots.close();
      throw e;
    }
    this.pool = slots;
    this.blockTokens = chunkTokens;
    long diskChunks =
        config.localDiskPaths().isEmpty() ? 0 : config.maxLocalDiskBytes() / chunkBytes;
    this.blockIndex =
        new BlockIndex((int) Math.min(1 << 22, 2L * (slots.capacitySlots() + diskChunks)));
    tiers.takeRecoveredPrefixes(blockIndex::record);
    this.pins = new PinLeases(tiers, nanoClock, TimeUnit.SECONDS.toNanos(config.pinTimeoutSec()));
    this.remoteLookups =
        new RemoteLookups(
            tiers, nanoClock, TimeUnit.MILLISECONDS.toNanos(config.remoteTimeoutMs()));
    if (startPinMonitor) {
      this.pinMonitor =
          Executors.newSingleThreadScheduledExecutor(DaemonThreads.named("kvtier-pin-monitor"));
      long every = config.pinCheckIntervalSec();
      pinMonitor.scheduleWithFixedDelay(this::expirePins, every, every, TimeUnit.SECONDS);
      pinMonitor.scheduleWithFixedDelay(remoteLookups::sweep, every, every, TimeUnit.SECONDS);
    } else {
      this.pinMonitor = null;
    }
  }

  /** The configuration in force. */
  public KvTierConfig config() {
    return config;
  }

  /** The namespace keys are made in. */
  public KeyNamespace namespace() {
    return namespace;
  }

  /** Bytes of a full chunk. */
  public long chunkBytes() {
    return pool.slotBytes();
  }

  /** Tokens per chunk. */
  public int chunkTokens() {
    return chunkTokens;
  }

  /**
   * Makes hits and stored prompt tails block-granular for vLLM's block size {@code blockTokens}
   * (docs/keys.md, "Block prefixes"): a lookup hits as many whole blocks as are stored, not only
   * whole chunks, and a prompt's last, partial chunk is stored as its whole blocks. Called once the
   * paged KV cache is known ({@link KvWorker}); a block size that does not divide the chunk size
   * keeps hits whole chunks (logged).
   *
   * @throws IllegalArgumentException if {@code blockTokens < 1}, or it differs from the block size
   *     set before
   */
  public void useBlockSize(int blockTokens) {
    checkPositive(blockTokens, "blockTokens");
    if (blockTokens >= chunkTokens || chunkTokens % blockTokens != 0) {
      LOG.log(
          System.Logger.Level.INFO,
          "vLLM's block size "
              + blockTokens
              + " does not divide chunk_size="
              + chunkTokens
              + " into several blocks: hits are whole chunks");
      return;
    }
    int before = this.blockTokens;
    if (before != chunkTokens && before != blockTokens) {
      throw new IllegalArgumentException(
          "block size " + blockTokens + " differs from the one in use, " + before);
    }
    this.blockTokens = blockTokens;
  }

  /**
   * For a model whose every layer attends to a sliding window of at most {@code windowTokens}
   * tokens (vLLM blocks of {@code blockTokens}): a hit needs only the chunks that hold the window
   * before its end, as vLLM's own prefix cache finds sliding-window hits. {@link
   * #lookupAndPinTiers} then answers, where the stored prefix stops short, the end of the last
   * whole chunk whose window's chunks are all in a local tier, pinning those chunks. Called once
   * the paged KV cache is known ({@link KvWorker}); hits stay whole chunks.
   *
   * @throws IllegalArgumentException if a size is below 1
   */
  public void useSlidingWindow(int windowTokens, int blockTokens) {
    checkPositive(windowTokens, "windowTokens");
    checkPositive(blockTokens, "blockTokens");
    this.slidingWindow = new int[] {windowTokens, blockTokens};
  }

  /** vLLM's block size hits are counted in ({@link #useBlockSize}); the chunk size before. */
  public int blockTokens() {
    return blockTokens;
  }

  /**
   * The leading tokens of a prompt of {@code tokenCount} that its chunks cover: the full chunks,
   * then the rest whole with {@code save_unfull_chunk}, else the rest's whole blocks.
   */
  int keyedTokens(int tokenCount) {
    if (partialChunks) {
      return tokenCount;
    }
    return tokenCount - tokenCount % chunkTokens % blockTokens;
  }

  /** How many chunks a prompt of {@code tokenCount} tokens is cut into ({@link #keyedTokens}). */
  public int chunkCount(int tokenCount) {
    return ChunkHasher.chunkCount(keyedTokens(tokenCount), chunkTokens, true);
  }

  /** The keys of the prompt's first {@code maxChunks} chunks (at most). */
  ChunkKey[] keys(int[] tokens, int tokenCount, KeyExtras extras, int maxChunks) {
    ChunkHasher.checkTokenCount(tokens, tokenCount);
    checkNonNegative(maxChunks, "maxChunks");
    int keyed = keyedTokens(tokenCount);
    ChunkKey[] keys = new ChunkKey[Math.min(maxChunks, chunkCount(tokenCount))];
    for (int c = 0; c < keys.length; c++) {
      keys[c] = chunkKey(keys, c, tokens, keyed, extras, null);
    }
    return keys;
  }

  /**
   * Chunk {@code c}'s key among the chunks of a prompt's first {@code keyed} tokens ({@link
   * #keyedTokens}), chained under {@code keys[c - 1]} (computed before), with chunk 0's {@code h1}
   * as its root hint. With {@code prefixes} and block granularity, also the chunk's block prefixes
   * into {@code prefixes[c]}, from the same pass over its tokens: a chunk of whole blocks gets its
   * own hash as the last of them.
   */
  private ChunkKey chunkKey(
      ChunkKey[] keys, int c, int[] tokens, int keyed, KeyExtras extras, long[][] prefixes) {
    int n = chunkTokensAt(c, keyed);
    long[] parent = c == 0 ? null : new long[] {keys[c - 1].h1(), keys[c - 1].h2()};
    long[] h = new long[2];
    long[] p =
        prefixes != null && blockTokens < chunkTokens && n > blockTokens
            ? ChunkHasher.blockPrefixes(parent, extras, c, tokens, c * chunkTokens, n, blockTokens)
            : null;
    if (p != null) {
      prefixes[c] = p;
    }
    if (p != null && n % blockTokens == 0) {
      h[0] = p[p.length - 2];
      h[1] = p[p.length - 1];
    } else {
      ChunkHasher.hashChunk(parent, extras, c, tokens, c * chunkTokens, n, h);
    }
    return new ChunkKey(namespaceId, h[0], h[1], c == 0 ? h[0] : keys[0].h1());
  }

  /**
   * The hashes of chunk {@code chunk}'s whole-block prefixes within the prompt's first {@code
   * tokenCount} tokens (see {@link ChunkHasher#blockPrefixes}), under its parent's hash ({@code
   * parent} null for the first chunk).
   */
  private long[] blockPrefixes(
      ChunkKey parent, KeyExtras extras, int chunk, int[] tokens, int tokenCount, int blocks) {
    int from = chunk * chunkTokens;
    int count = Math.min(Math.min(chunkTokens, tokenCount - from), blocks * blockTokens);
    return ChunkHasher.blockPrefixes(
        parent == null ? null : new long[] {parent.h1(), parent.h2()},
        extras,
        chunk,
        tokens,
        from,
        count,
        blockTokens);
  }

  /** A block-granular hit inside one chunk: its source chunk, blocks and where it is held. */
  private record PartHit(ChunkKey source, int blocks, TieredStore.LocalPin where) {}

  /**
   * The longest run of whole blocks at the start of chunk {@code chunk} that the local tiers hold
   * (docs/keys.md, "Block prefixes"), given that chunk {@code chunk} itself ({@code keys[chunk]},
   * if the prompt has it) was not found: a stored chunk whose key is that prefix's, or a longer
   * stored chunk that starts with it ({@link BlockIndex}). With {@code pin} the source is pinned.
   *
   * @return the hit, or null when not even one block is held
   */
  private PartHit partHit(
      ChunkKey[] keys, int chunk, int[] tokens, int tokenCount, KeyExtras extras, boolean pin) {
    if (blockTokens >= chunkTokens) {
      return null;
    }
    int inChunk = Math.min(chunkTokens, tokenCount - chunk * chunkTokens);
    int blocks = inChunk / blockTokens;
    if (blocks == 0) {
      return null;
    }
    long[] q =
        blockPrefixes(
            chunk == 0 ? null : keys[chunk - 1], extras, chunk, tokens, tokenCount, blocks);
    ChunkKey own = chunk < keys.length ? keys[chunk] : null;
    List<BlockIndex.Match> longer = blockIndex.matches(namespaceId, q, blocks);
    int tried = 0;
    for (int k = blocks; k >= 1; k--) {
      ChunkKey direct = new ChunkKey(namespaceId, q[2 * k - 2], q[2 * k - 1]);
      if (!direct.equals(own)) {
        TieredStore.LocalPin where = probe(direct, pin);
        if (where != TieredStore.LocalPin.NONE) {
          return new PartHit(direct, k, where);
        }
      }
      while (tried < longer.size() && longer.get(tried).blocks() >= k) {
        BlockIndex.Match m = longer.get(tried++);
        TieredStore.LocalPin where = probe(m.source(), pin);
        if (where != TieredStore.LocalPin.NONE) {
          return new PartHit(m.source(), m.blocks(), where);
        }
        blockIndex.forget(namespaceId, q, m.source());
      }
    }
    return null;
  }

  private TieredStore.LocalPin probe(ChunkKey key, boolean pin) {
    if (pin) {
      return tiers.pinLocallyWhere(key);
    }
    return tiers.containsLocally(key) ? TieredStore.LocalPin.LOWER : TieredStore.LocalPin.NONE;
  }

  /** Tokens in chunk {@code chunk} of a prompt of {@code tokenCount} tokens. */
  public int chunkTokensAt(int chunk, int tokenCount) {
    return Math.min(chunkTokens, tokenCount - chunk * chunkTokens);
  }

  /** Bytes one token takes in a chunk (all layers, K and V). */
  public long bytesPerToken() {
    return bytesPerToken;
  }

  /** Tokens covered by the first {@code chunks} chunks of a prompt of {@code tokenCount}. */
  private int tokensIn(int chunks, int tokenCount) {
    return Math.min(tokenCount, chunks * chunkTokens);
  }

  // ---- lookups --------------------------------------------------------------------------------

  /**
   * Returns how many leading tokens of the prompt are stored: a multiple of the chunk size, or the
   * whole prompt when its partial last chunk is stored too. Does not block on I/O; does not pin.
   *
   * @throws IllegalStateException if the engine is closed
   */
  public int lookup(int[] tokens, int tokenCount) {
    return lookup(tokens, tokenCount, KeyExtras.NONE);
  }

  /** Like {@link #lookup(int[], int)} for a prompt with {@code extras} in its keys. */
  public int lookup(int[] tokens, int tokenCount, KeyExtras extras) {
    checkOpen();
    ChunkHasher.checkTokenCount(tokens, tokenCount);
    int keyed = keyedTokens(tokenCount);
    ChunkKey[] keys = new ChunkKey[chunkCount(tokenCount)];
    // Hash chunk by chunk and stop at the first local miss: a cold prompt costs one hash, not
    // all. With a remote tier, the rest of the prompt is then asked about in one round trip.
    int hitChunks = 0;
    while (hitChunks < keys.length) {
      keys[hitChunks] = chunkKey(keys, hitChunks, tokens, keyed, extras, null);
      if (!tiers.containsLocally(keys[hitChunks])) {
        break;
      }
      hitChunks++;
    }
    int remote = 0;
    if (hitChunks < keys.length && tiers.hasRemote()) {
      for (int c = hitChunks + 1; c < keys.length; c++) {
        keys[c] = chunkKey(keys, c, tokens, keyed, extras, null);
      }
      remote = tiers.prefixLength(Arrays.copyOfRange(keys, hitChunks, keys.length));
      hitChunks += remote;
    }
    int hit = tokensIn(hitChunks, keyed);
    if (remote == 0 && hitChunks * chunkTokens < tokenCount) {
      PartHit part = partHit(keys, hitChunks, tokens, tokenCount, extras, false);
      hit = part == null ? hit : hitChunks * chunkTokens + part.blocks() * blockTokens;
    }
    lookupTokens.add(tokenCount);
    hitTokens.add(hit);
    return hit;
  }

  /**
   * Like {@link #lookup} but also pins the chunks it reports under {@code requestId}, so they stay
   * until {@link #unpinRequest}. A second lookup for the same request replaces its pins.
   */
  public int lookupAndPin(long requestId, int[] tokens, int tokenCount) {
    return lookupAndPinTiers(requestId, tokens, tokenCount, KeyExtras.NONE)[0];
  }

  /**
   * Like {@link #lookupAndPin}, also telling how much of the hit is in memory, and never waiting on
   * the network: the part of the prompt past the local prefix is asked of the remote tiers in the
   * background, and the lookup says "pending" until the answer is in (ask again on a later step).
   * An answer that takes longer than {@code remote_timeout_ms} counts as a miss.
   *
   * @return {@code [hitTokens, memoryTokens, storing, pending, localTokens]}: the stored prefix;
   *     the part of it whose chunks are all in the CPU tier (a load of more than that reads disk or
   *     the network); 1 when the chunk right after the local prefix is being stored at this moment
   *     (a lookup a moment later may hit more), else 0; 1 when a remote tier's answer is still
   *     pending (the hit then counts local chunks only; ask again), else 0; the part of the hit in
   *     this process's tiers, CPU or disk (the rest is read from a remote store)
   */
  public int[] lookupAndPinTiers(long requestId, int[] tokens, int tokenCount) {
    return lookupAndPinTiers(requestId, tokens, tokenCount, KeyExtras.NONE);
  }

  /** Like {@link #lookupAndPinTiers(long, int[], int)} with {@code extras} in the keys. */
  public int[] lookupAndPinTiers(long requestId, int[] tokens, int tokenCount, KeyExtras extras) {
    checkOpen();
    pins.release(requestId);
    ChunkKey[] keys = keys(tokens, tokenCount, extras, Integer.MAX_VALUE);
    List<ChunkKey> pinned = new ArrayList<>();
    int chunks = 0;
    int memoryChunks = 0;
    while (chunks < keys.length) {
      TieredStore.LocalPin where = tiers.pinLocallyWhere(keys[chunks]);
      if (where == TieredStore.LocalPin.NONE) {
        break;
      }
      if (where == TieredStore.LocalPin.MEMORY && memoryChunks == chunks) {
        memoryChunks++;
      }
      pinned.add(keys[chunks]);
      chunks++;
    }
    int beingStored = chunks < keys.length && storing.contains(keys[chunks]) ? 1 : 0;
    int pending = 0;
    int remote = 0;
    if (chunks < keys.length && tiers.hasRemote()) {
      // Remote chunks cannot be pinned; one round trip, off this thread, tells how many more.
      remote = remoteLookups.prefix(Arrays.copyOfRange(keys, chunks, keys.length));
      if (remote < 0) {
        pending = 1;
      } else {
        chunks += remote;
      }
    }
    int keyed = keyedTokens(tokenCount);
    Integer windowChunks = pending == 0 && remote == 0 ? windowHit(keys, chunks, pinned) : null;
    if (windowChunks != null) { // only the window's chunks are needed, and are pinned
      chunks = Math.abs(windowChunks);
      memoryChunks = windowChunks > 0 ? chunks : 0;
    }
    int hit = tokensIn(chunks, keyed);
    int memory = tokensIn(memoryChunks, keyed);
    int local = tokensIn(chunks - Math.max(0, remote), keyed); // remote < 0: pending
    if (pending == 0 && remote == 0 && chunks * chunkTokens < tokenCount) {
      // The next chunk is not stored: perhaps its first blocks are, alone or in a longer chunk.
      PartHit part = partHit(keys, chunks, tokens, tokenCount, extras, true);
      if (part != null) {
        pinned.add(part.source());
        hit = chunks * chunkTokens + part.blocks() * blockTokens;
        local = hit;
        if (part.where() == TieredStore.LocalPin.MEMORY && memoryChunks == chunks) {
          memory = hit;
        }
      }
    }
    pins.hold(requestId, pinned);
    if (pending == 0) { // a pending lookup is asked again: count the prompt once
      lookupTokens.add(tokenCount);
      hitTokens.add(hit);
    }
    return new int[] {hit, memory, beingStored, pending, local};
  }

  /**
   * With {@link #useSlidingWindow}, where the stored prefix stops at chunk {@code stored}: the
   * largest chunk count {@code k > stored} whose window's chunks are all in a local tier, pinned
   * into {@code pinned}, as {@code k} when they are all in memory and {@code -k} when a load reads
   * some from disk; null for none (or without a sliding window).
   */
  private Integer windowHit(ChunkKey[] keys, int stored, List<ChunkKey> pinned) {
    int[] sliding = slidingWindow;
    if (sliding == null || stored >= keys.length) {
      return null;
    }
    int window = sliding[0];
    int block = sliding[1];
    for (int k = keys.length; k > stored; k--) {
      int first = CacheGroups.keptFrom(k * chunkTokens, window, block) / chunkTokens;
      boolean held = true;
      for (int c = first; c < k && held; c++) {
        held = tiers.containsLocally(keys[c]);
      }
      if (!held) {
        continue;
      }
      boolean memory = true;
      for (int c = first; c < k; c++) {
        TieredStore.LocalPin where = tiers.pinLocallyWhere(keys[c]);
        if (where == TieredStore.LocalPin.NONE) {
          return null; // evicted meanwhile: the stored prefix stands
        }
        pinned.add(keys[c]);
        memory &= where == TieredStore.LocalPin.MEMORY;
      }
      return memory ? k : -k;
    }
    return null;
  }

  /** Drops the pins of {@code requestId}; unknown ids are ignored. Idempotent. */
  public void unpinRequest(long requestId) {
    pins.release(requestId);
  }

  /**
   * Releases the pins of every request pinned longer than {@code pin_timeout_sec} ago and counts
   * them; runs every {@code pin_check_interval_sec} on {@code kvtier-pin-monitor}. Never throws.
   *
   * @return requests whose pins were released
   */
  public int expirePins() {
    return pins.expire("pin_timeout_sec=" + config.pinTimeoutSec());
  }

  /**
   * Looks up several prompts at once: prompt {@code i} is {@code tokens[offsets[i], offsets[i+1])}.
   *
   * @throws IllegalArgumentException if the offsets are not non-decreasing within the array
   */
  public int[] lookupBatch(int[] tokens, int[] offsets) {
    checkOpen();
    PromptBatch batch = new PromptBatch(tokens, offsets);
    int[] hits = new int[batch.size()];
    for (int i = 0; i < hits.length; i++) {
      hits[i] = lookup(batch.tokens(i), batch.tokenCount(i));
    }
    return hits;
  }

  // ---- stores ---------------------------------------------------------------------------------

  /**
   * Reserves buffers for the chunks of the prompt from chunk {@code skipChunks} on.
   *
   * @return {@code [handle, address_0, address_1, ...]}, one address per chunk of the prompt (saved
   *     or not); 0 where the chunk is already in a local tier (CPU or disk: a remote store is not
   *     asked, which would wait on the network), before {@code skipChunks}, or has no room
   *     (dropped, counted). A chunk held only remotely is stored again; its write-back to the
   *     remote store is a no-op there. Chunk {@code c} takes {@code tokensInChunk(c) *
   *     bytesPerToken} bytes at its address.
   * @throws IllegalArgumentException if {@code skipChunks} is negative
   */
  public long[] prepareStore(int[] tokens, int tokenCount, int skipChunks) {
    return prepareStore(tokens, tokenCount, KeyExtras.NONE, skipChunks);
  }

  /** Like {@link #prepareStore(int[], int, int)} with {@code extras} in the keys. */
  public long[] prepareStore(int[] tokens, int tokenCount, KeyExtras extras, int skipChunks) {
    StoreTransaction tx = beginStore(tokens, tokenCount, extras, skipChunks);
    long[] out = new long[1 + tx.chunks()];
    for (int c = 0; c < tx.chunks(); c++) {
      ChunkBuffer b = tx.buffer(c);
      out[1 + c] = b == null ? 0 : b.address();
    }
    long handle = nextHandle.getAndIncrement();
    pendingStores.put(handle, tx);
    out[0] = handle;
    return out;
  }

  /**
   * Reserves a buffer for each chunk of the prompt from {@code skipChunks} on that is not stored
   * locally yet, for a data mover to fill; the chunks become visible on {@link
   * StoreTransaction#commit}. Stops at the first chunk that finds no room (later chunks are useless
   * without it). Never waits on the network.
   *
   * @throws IllegalArgumentException if {@code skipChunks} is negative or the tokens are malformed
   * @throws IllegalStateException if the engine is closed
   */
  public StoreTransaction beginStore(
      int[] tokens, int tokenCount, KeyExtras extras, int skipChunks) {
    return beginStore(tokens, tokenCount, extras, skipChunks, null);
  }

  /**
   * Like {@link #beginStore(int[], int, KeyExtras, int)}; with events on ({@link #enableEvents}),
   * each chunk {@code c} that gets a buffer is tagged with {@code tags[c]} (null or short: no tag)
   * for the events of the tiers that store it.
   */
  public StoreTransaction beginStore(
      int[] tokens, int tokenCount, KeyExtras extras, int skipChunks, long[][] tags) {
    checkOpen();
    checkNonNegative(skipChunks, "skipChunks");
    int keyed = keyedTokens(tokenCount);
    long[][] prefixes = new long[ChunkHasher.chunkCount(keyed, chunkTokens, true)][];
    ChunkKey[] keys = keysAndPrefixes(tokens, keyed, extras, skipChunks, prefixes);
    ChunkBuffer[] buffers = new ChunkBuffer[keys.length];
    for (int c = skipChunks; c < keys.length; c++) {
      if (tiers.containsLocally(keys[c])) { // never a network round trip on the step loop
        continue;
      }
      int n = chunkTokensAt(c, keyed);
      ChunkBuffer b = tiers.cpu().allocate(n * bytesPerToken);
      if (b == null) {
        break; // no room: later chunks are useless without this one
      }
      buffers[c] = b;
      storing.add(keys[c]);
      if (prefixes[c] != null) {
        b.setBlockPrefixes(prefixes[c]);
      }
      ChunkEvents ev = events;
      if (ev != null && tags != null && c < tags.length && tags[c] != null) {
        ev.tag(keys[c], tags[c]);
      }
    }
    return new StoreTransaction(keys, buffers, keyed, storing, this::commitChunk);
  }

  /**
   * The keys of the chunks of a prompt's first {@code keyed} tokens ({@link #keyedTokens}); with
   * block granularity, also each chunk's block prefixes from chunk {@code from} on, into {@code
   * prefixes[c]} (null where it has none); a chunk of whole blocks gets its own hash from the same
   * pass over its tokens (its last block prefix).
   */
  private ChunkKey[] keysAndPrefixes(
      int[] tokens, int keyed, KeyExtras extras, int from, long[][] prefixes) {
    ChunkHasher.checkTokenCount(tokens, keyed);
    ChunkKey[] keys = new ChunkKey[prefixes.length];
    for (int c = 0; c < keys.length; c++) {
      keys[c] = chunkKey(keys, c, tokens, keyed, extras, c >= from ? prefixes : null);
    }
    return keys;
  }

  /** Makes one stored chunk visible and records the block prefixes it serves. */
  private boolean commitChunk(ChunkKey key, ChunkBuffer chunk) {
    long[] prefixes = chunk.blockPrefixes();
    if (closed || !tiers.put(key, chunk)) {
      return false;
    }
    blockIndex.record(key, prefixes);
    return true;
  }

  /**
   * Finishes a {@link #prepareStore}: with {@code ok} the written chunks become visible, otherwise
   * they are discarded. Either way the handle's buffers are released.
   *
   * @return chunks made visible
   * @throws IllegalArgumentException if the handle is unknown or already completed
   */
  public int completeStore(long handle, boolean ok) {
    StoreTransaction tx = pendingStores.remove(handle);
    if (tx == null) {
      throw new IllegalArgumentException("unknown or completed store handle " + handle);
    }
    if (!ok) {
      tx.abort();
      return 0;
    }
    return tx.commit();
  }

  /**
   * Stores the prompt's chunks from caller memory: chunk {@code c}'s bytes are read from {@code
   * srcAddresses[c]} (0 skips the chunk). One call, one copy per chunk.
   *
   * @return chunks stored (already stored ones are not counted)
   * @throws IllegalArgumentException if {@code srcAddresses} is shorter than the chunk count
   */
  public int store(int[] tokens, int tokenCount, long[] srcAddresses) {
    checkOpen();
    int chunks = chunkCount(tokenCount);
    if (srcAddresses.length < chunks) {
      throw new IllegalArgumentException(
          "srcAddresses has "
              + srcAddresses.length
              + " entries for a prompt of "
              + chunks
              + " chunks");
    }
    try (StoreTransaction tx = beginStore(tokens, tokenCount, KeyExtras.NONE, 0)) {
      for (int c = 0; c < chunks; c++) {
        ChunkBuffer dst = tx.buffer(c);
        if (dst != null && srcAddresses[c] != 0) {
          MemorySegment.copy(
              HostMemory.view(srcAddresses[c], dst.length()), 0, dst.segment(), 0, dst.length());
        }
      }
      return tx.commit();
    }
  }

  // ---- loads ----------------------------------------------------------------------------------

  /**
   * Takes references to the stored leading chunks of the prompt (at most {@code maxChunks}).
   *
   * @return {@code [handle, address_0, ...]} for the contiguous stored prefix; the caller reads
   *     chunk {@code c}'s bytes at {@code address_c}, then calls {@link #completeLoad}
   */
  public long[] prepareLoad(int[] tokens, int tokenCount, int maxChunks) {
    return prepareLoad(tokens, tokenCount, 0, maxChunks);
  }

  /**
   * Like {@link #prepareLoad(int[], int, int)} for chunks {@code [firstChunk, maxChunks)} only (the
   * caller already has the earlier ones): {@code address_0} is chunk {@code firstChunk}'s.
   *
   * @throws IllegalArgumentException if {@code firstChunk} is negative
   */
  public long[] prepareLoad(int[] tokens, int tokenCount, int firstChunk, int maxChunks) {
    return prepareLoad(tokens, tokenCount, KeyExtras.NONE, firstChunk, maxChunks);
  }

  /** Like {@link #prepareLoad(int[], int, int, int)} with {@code extras} in the keys. */
  public long[] prepareLoad(
      int[] tokens, int tokenCount, KeyExtras extras, int firstChunk, int maxChunks) {
    LoadTransaction tx = beginLoad(tokens, tokenCount, extras, firstChunk, maxChunks);
    long handle = nextHandle.getAndIncrement();
    pendingLoads.put(handle, tx);
    long[] out = new long[1 + tx.size()];
    out[0] = handle;
    for (int i = 0; i < tx.size(); i++) {
      out[1 + i] = tx.buffer(i).address();
    }
    return out;
  }

  /**
   * Takes references to the stored chunks {@code [firstChunk, maxChunks)} of the prompt (the run
   * stored contiguously from {@code firstChunk}), reading lower tiers where it must; they are held
   * until {@link LoadTransaction#close}. May block on disk or network reads: for worker threads,
   * never the step loop.
   *
   * @throws IllegalArgumentException if {@code firstChunk} is negative
   * @throws IllegalStateException if the engine is closed
   */
  public LoadTransaction beginLoad(
      int[] tokens, int tokenCount, KeyExtras extras, int firstChunk, int maxChunks) {
    return beginLoad(tokens, tokenCount, extras, firstChunk, maxChunks, null);
  }

  /**
   * Like {@link #beginLoad(int[], int, KeyExtras, int, int)}, handing each chunk a lower tier reads
   * to {@code arrived} (with its chunk number) as soon as it is read, before this returns, so the
   * caller can copy it while later chunks are still being read ({@link TieredStore#getPrefix(
   * ChunkKey[], ObjIntConsumer)}). Chunks from the CPU tier, and chunks past the prefix's first
   * miss, may or may not be handed over: the transaction says which chunks the load has.
   */
  public LoadTransaction beginLoad(
      int[] tokens,
      int tokenCount,
      KeyExtras extras,
      int firstChunk,
      int maxChunks,
      ObjIntConsumer<ChunkBuffer> arrived) {
    checkOpen();
    checkNonNegative(firstChunk, "firstChunk");
    ChunkKey[] keys = keys(tokens, tokenCount, extras, maxChunks);
    int keyed = keyedTokens(tokenCount);
    ChunkKey[] wanted =
        firstChunk >= keys.length
            ? new ChunkKey[0]
            : Arrays.copyOfRange(keys, firstChunk, keys.length);
    List<ChunkBuffer> got =
        new ArrayList<>(
            List.of(
                tiers.getPrefix(
                    wanted, arrived == null ? null : (b, i) -> arrived.accept(b, firstChunk + i))));
    int tail = keys.length - 1;
    if (got.size() == wanted.length - 1
        && tail * chunkTokens + chunkTokens > keyed
        && blockTokens < chunkTokens) {
      // The last chunk is a run of whole blocks stored inside a longer chunk (a lookup's hit).
      ChunkBuffer inside = longerSource(keys, tail, tokens, keyed, extras);
      if (inside != null) {
        got.add(inside);
      }
    }
    return new LoadTransaction(got, firstChunk, keyed);
  }

  /**
   * Reads the stored chunk that holds chunk {@code chunk} of the prompt, a run of whole blocks, as
   * its first blocks ({@link BlockIndex}); null if none is held any more.
   */
  private ChunkBuffer longerSource(
      ChunkKey[] keys, int chunk, int[] tokens, int keyed, KeyExtras extras) {
    int blocks = chunkTokensAt(chunk, keyed) / blockTokens;
    long[] q =
        blockPrefixes(chunk == 0 ? null : keys[chunk - 1], extras, chunk, tokens, keyed, blocks);
    for (BlockIndex.Match m : blockIndex.matches(namespaceId, q, blocks)) {
      if (m.blocks() < blocks) {
        break;
      }
      ChunkBuffer[] b = tiers.getPrefix(new ChunkKey[] {m.source()});
      if (b.length == 1) {
        return b[0];
      }
    }
    return null;
  }

  /**
   * Starts reading the prompt's chunks that only the disk tier holds into the CPU tier, in the
   * background (ahead of queued disk writes), so a later {@link #prepareLoad} finds them in memory.
   * Does not block.
   *
   * @return chunks queued for prefetch
   */
  public int prefetch(int[] tokens, int tokenCount) {
    return prefetch(tokens, tokenCount, KeyExtras.NONE);
  }

  /** Like {@link #prefetch(int[], int)} with {@code extras} in the keys. */
  public int prefetch(int[] tokens, int tokenCount, KeyExtras extras) {
    checkOpen();
    return tiers.prefetch(keys(tokens, tokenCount, extras, Integer.MAX_VALUE));
  }

  /**
   * Releases the buffers of a {@link #prepareLoad}.
   *
   * @throws IllegalArgumentException if the handle is unknown or already completed
   */
  public void completeLoad(long handle) {
    LoadTransaction tx = pendingLoads.remove(handle);
    if (tx == null) {
      throw new IllegalArgumentException("unknown or completed load handle " + handle);
    }
    tx.close();
  }

  /**
   * Copies the stored leading chunks of the prompt into caller memory: chunk {@code c} to {@code
   * dstAddresses[c]}.
   *
   * @return chunks copied (a contiguous prefix)
   * @throws IllegalArgumentException if an address needed is 0
   */
  public int retrieve(int[] tokens, int tokenCount, long[] dstAddresses) {
    try (LoadTransaction tx =
        beginLoad(tokens, tokenCount, KeyExtras.NONE, 0, dstAddresses.length)) {
      for (int c = 0; c < tx.size(); c++) {
        ChunkBuffer src = tx.buffer(c);
        MemorySegment.copy(
            src.segment(), 0, HostMemory.view(dstAddresses[c], src.length()), 0, src.length());
      }
      return tx.size();
    }
  }

  // ---- batched forms -------------------------------------------------------------------------

  /**
   * Stores several prompts in one call: prompt {@code i} is {@code tokens[offsets[i],
   * offsets[i+1])}, and its chunks' source addresses follow one another in {@code srcAddresses}
   * (prompt 0's chunks, then prompt 1's, ...).
   *
   * @return chunks stored per prompt
   * @throws IllegalArgumentException if the offsets are malformed or there are too few addresses
   */
  public int[] storeBatch(int[] tokens, int[] offsets, long[] srcAddresses) {
    return perPrompt(tokens, offsets, srcAddresses, "srcAddresses", this::store);
  }

  /**
   * Retrieves several prompts in one call; addresses are laid out as in {@link #storeBatch}.
   *
   * @return chunks copied per prompt (each a contiguous prefix)
   * @throws IllegalArgumentException if the offsets are malformed or there are too few addresses
   */
  public int[] retrieveBatch(int[] tokens, int[] offsets, long[] dstAddresses) {
    return perPrompt(tokens, offsets, dstAddresses, "dstAddresses", this::retrieve);
  }

  private int[] perPrompt(
      int[] tokens, int[] offsets, long[] addresses, String name, PromptBatch.PromptOp op) {
    checkOpen();
    return new PromptBatch(tokens, offsets).perPrompt(addresses, name, this::chunkCount, op);
  }

  /**
   * Empties the CPU and disk tiers and drops every request's pins (a cache reset; remote stores
   * keep their chunks). Loads already holding chunks finish from them.
   *
   * @return chunks removed
   */
  public int clearLocal() {
    checkOpen();
    pins.releaseAll();
    blockIndex.clear();
    return tiers.clearLocal();
  }

  // ---- stats and lifecycle --------------------------------------------------------------------

  /** The engine's counters now: lookups, each tier, the pool, pins. Never throws. */
  public EngineStats statistics() {
    StoreStats disk = StoreStats.EMPTY;
    StoreStats remote = StoreStats.EMPTY;
    for (KvStore lower : tiers.lowerTiers()) {
      switch (lower.medium()) {
        case DISK -> disk = lower.stats();
        case REMOTE -> remote = lower.stats();
        case MEMORY -> {}
      }
    }
    return new EngineStats(
        lookupTokens.sum(),
        hitTokens.sum(),
        tiers.stats(),
        disk,
        remote,
        pool.inUseSlots(),
        pool.mappedBytes(),
        pool.allocationFailures(),
        tiers.copyDownDropped(),
        pins.expiredCount(),
        remoteLookups.askedCount(),
        remoteLookups.timedOutCount(),
        remoteLookups.rejectedCount());
  }

  /** {@link #statistics()} flattened for the Python bridge, named by {@link #statNames()}. */
  public long[] stats() {
    return statistics().toArray();
  }

  /** Names of the {@link #stats()} entries, in order ({@link EngineStats#names()}). */
  public static String[] statNames() {
    return EngineStats.names();
  }

  /** The pool behind the CPU tier (for tests and benchmarks). */
  public ChunkPool pool() {
    return pool;
  }

  /**
   * Starts KV events: from now on the local tiers report the tagged chunks they store and remove
   * ({@link ChunkEvents}). Idempotent; returns the engine's events.
   */
  public synchronized ChunkEvents enableEvents(int maxQueued, int maxUnheldTags) {
    if (events == null) {
      ChunkEvents e = new ChunkEvents(maxQueued, maxUnheldTags);
      tiers.listen(e);
      events = e;
    }
    return events;
  }

  /** The engine's KV events, or null while they are off. */
  public ChunkEvents events() {
    return events;
  }

  /** The composed store (for tests and benchmarks). */
  public TieredStore tiers() {
    return tiers;
  }

  /**
   * Releases pending handles and every chunk; the pool's memory is returned once no buffer is held.
   * Idempotent.
   */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    if (pinMonitor != null) {
      pinMonitor.shutdownNow();
    }
    pendingStores.keySet().forEach(h -> completeStore(h, false));
    pendingLoads.keySet().forEach(this::completeLoad);
    pins.forgetAll();
    tiers.close();
    pool.close();
  }

  private void checkOpen() {
    if (closed) {
      throw new IllegalStateException("KvEngine is closed");
    }
  }

  @Override
  public String toString() {
    return "KvEngine(" + namespace.canonical() + ")";
  }
}
