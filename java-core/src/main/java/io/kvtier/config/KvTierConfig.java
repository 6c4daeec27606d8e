package io.kvtier.config;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * kvtier's configuration: immutable once built, typed getters, and where each value came from.
 *
 * <p>Sources, later ones winning: defaults; one YAML file, named by {@code KVTIER_CONFIG_FILE} or
 * LMCache's {@code LMCACHE_CONFIG_FILE} (both set is an error); LMCache's {@code LMCACHE_<KEY>}
 * environment variables; {@code KVTIER_<KEY>} variables; a per-instance map (vLLM's {@code
 * kv_connector_extra_config}, where LMCache's {@code lmcache.} prefix is accepted). Key names
 * follow LMCache's where the meaning is the same, and every key of LMCache's configuration loads
 * ({@link LmCacheKeys}): those kvtier ignores or reads under another name give {@link #notices()}
 * for the engine to log at start-up; any other key fails, naming the closest known key.
 *
 * <p>Thread-safe (immutable).
 */
public final class KvTierConfig {

  // ---- supported keys: the one source of the key table in docs/configuration.md ---------------
  // Each doc string is the description the reference shows (Markdown); scripts/gen-config-docs
  // regenerates the table and ConfigReferenceTest fails when the two disagree.

  /** Tokens per chunk: the unit of hashing, storing and loading. */
  public static final ConfigKey<Integer> CHUNK_SIZE =
      new ConfigKey<>(
          "chunk_size",
          256,
          "tokens",
          "Tokens per chunk: the unit of hashing, storing and loading.",
          ConfigKey.positiveInt());

  /** Whether the CPU tier keeps chunks, or only stages them on their way to lower tiers. */
  public static final ConfigKey<Boolean> LOCAL_CPU =
      new ConfigKey<>(
          "local_cpu",
          true,
          "",
          "Keep chunks in pinned CPU memory. With `false` (LMCache's meaning) the CPU tier only"
              + " stages them: a chunk leaves it once copied down to the lower tiers, and a hit in"
              + " a lower tier is not promoted into it, so loads read disk or the remote store."
              + " `false` needs `local_disk` or `remote_url`; without either, start-up fails.",
          ConfigKey.bool());

  /** Budget of the CPU tier, in bytes (configured in GB). */
  public static final ConfigKey<Long> MAX_LOCAL_CPU_SIZE =
      new ConfigKey<>(
          "max_local_cpu_size",
          5L << 30,
          "GB (2^30 bytes)",
          "Pinned CPU memory for chunks (with `local_cpu: false`, for the chunks being staged)."
              + " Mapped lazily in 256 MiB slabs; nothing is touched up front. Must be > 0.",
          ConfigKey.gigabytes());

  /** Disk tier directories; empty when the disk tier is off. */
  public static final ConfigKey<List<String>> LOCAL_DISK =
      new ConfigKey<>(
          "local_disk",
          List.of(),
          "",
          "Directories of the disk tier; `file://` prefixes allowed. Unset: no disk tier.",
          ConfigKey.stringList());

  /** Budget of the disk tier over all paths, in bytes (configured in GB). */
  public static final ConfigKey<Long> MAX_LOCAL_DISK_SIZE =
      new ConfigKey<>(
          "max_local_disk_size",
          0L,
          "GB (2^30 bytes)",
          "Disk budget of the instance across all `local_disk` paths (with N ranks, tensor times"
              + " pipeline parallel, each rank's share is 1/N); must be > 0 when `local_disk` is"
              + " set.",
          ConfigKey.gigabytes());

  /** How several disk paths are used. */
  public static final ConfigKey<DiskSharding> LOCAL_DISK_PATH_SHARDING =
      new ConfigKey<>(
          "local_disk_path_sharding",
          DiskSharding.BY_GPU,
          "",
          "One path per GPU (TP rank), or every path striped by chunk hash.",
          ConfigKey.enumOf(
              DiskSharding.values(),
              DiskSharding::configName,
              (k, raw) -> DiskSharding.parse(k, ConfigKey.str(k, raw))));

  /** Remote store URL; null when there is none. */
  public static final ConfigKey<String> REMOTE_URL =
      new ConfigKey<>(
          "remote_url",
          null,
          "",
          "Remote store: `redis://[[user:]password@]host[:port][/db]`, `rediss://…` (TLS;"
              + " `?verifyPeer=NONE` for a self-signed certificate),"
              + " `redis-sentinel://[password@]host:port[,host:port…][/db]#master`,"
              + " `redis-cluster://[password@]host:port[,host:port…]` (`rediss-cluster://` for"
              + " TLS), `kvtier://[:secret@]host:port` (kvtier's cache server, `kvtier-server`),"
              + " `kvtiers://[:secret@]host:port[?ca=FILE]` (the cache server over TLS, trusting"
              + " the PEM certificates in `ca`, else the JVM's trust store)."
              + " Other schemes are refused when the configuration loads. Its password is never shown"
              + " (`redis://user:***@host`).",
          ConfigKey.url(
              "redis://",
              "rediss://",
              "redis-sentinel://",
              "rediss-sentinel://",
              "redis-cluster://",
              "rediss-cluster://",
              "kvtier://",
              "kvtiers://"));

  /** Whether a prompt's last, partial chunk is saved too. */
  public static final ConfigKey<Boolean> SAVE_UNFULL_CHUNK =
      new ConfigKey<>(
          "save_unfull_chunk",
          false,
          "",
          "Also save a prompt's last chunk when it has fewer than `chunk_size` tokens.",
          ConfigKey.bool());

  /** Whether the chunks of generated tokens are saved too. */
  public static final ConfigKey<Boolean> SAVE_DECODE_CACHE =
      new ConfigKey<>(
          "save_decode_cache",
          true,
          "",
          "Also save the full chunks of generated tokens, so a conversation's next turn (the"
              + " previous prompt, the answer and a new message) hits beyond the previous prompt."
              + " `false` saves prompts only.",
          ConfigKey.bool());

  /** Layerwise save/load. */
  public static final ConfigKey<Boolean> USE_LAYERWISE =
      new ConfigKey<>(
          "use_layerwise",
          false,
          "",
          "Save and load layer by layer, overlapping copies with compute.",
          ConfigKey.bool());

  /** CPU tier eviction policy. */
  public static final ConfigKey<CachePolicy> CACHE_POLICY =
      new ConfigKey<>(
          "cache_policy",
          CachePolicy.TINYLFU,
          "",
          "Which chunks the CPU tier evicts first (TINYLFU is Caffeine's W-TinyLFU). LMCache's"
              + " `LFU` is read as TINYLFU (said at start-up); its `MRU` is refused with this list.",
          ConfigKey.enumOf(
              CachePolicy.values(),
              CachePolicy::name,
              (k, raw) -> CachePolicy.parse(k, ConfigKey.str(k, raw))));

  /** Background workers that copy chunks from the CPU tier down to lower tiers. */
  public static final ConfigKey<Integer> COPY_DOWN_THREADS =
      new ConfigKey<>(
          "copy_down_threads",
          2,
          "threads",
          "Background workers copying stored chunks from the CPU tier to lower tiers.",
          ConfigKey.positiveInt());

  /** Chunks waiting to be copied down before new ones are dropped (and counted). */
  public static final ConfigKey<Integer> COPY_DOWN_QUEUE =
      new ConfigKey<>(
          "copy_down_queue",
          1024,
          "chunks",
          "Copies that may wait for those workers; when full, a copy is dropped and counted (the"
              + " put itself never waits).",
          ConfigKey.positiveInt());

  /** Threads writing chunks to disk in the background. */
  public static final ConfigKey<Integer> DISK_WRITE_THREADS =
      new ConfigKey<>(
          "disk_write_threads",
          4,
          "threads",
          "Background workers writing chunks to the disk tier (a put never waits for them).",
          ConfigKey.positiveInt());

  /** Threads reading chunks from disk in parallel for batched gets and prefetches. */
  public static final ConfigKey<Integer> DISK_READ_THREADS =
      new ConfigKey<>(
          "disk_read_threads",
          8,
          "threads",
          "Workers reading chunks from disk in parallel (batched gets, prefetch).",
          ConfigKey.positiveInt());

  /** Disk writes that may wait before new ones are dropped (and counted). */
  public static final ConfigKey<Integer> DISK_QUEUE =
      new ConfigKey<>(
          "disk_queue",
          256,
          "chunks",
          "Disk writes that may wait for the writers; when full, a put is dropped and counted.",
          ConfigKey.positiveInt());

  /** LZ4-compress chunks on disk. */
  public static final ConfigKey<Boolean> LOCAL_DISK_LZ4 =
      new ConfigKey<>(
          "local_disk_lz4",
          false,
          "",
          "LZ4-compress each chunk on disk; a chunk that does not shrink by 5% is kept raw.",
          ConfigKey.bool());

  /** How long a remote operation may take before it counts as a miss or a dropped put. */
  public static final ConfigKey<Integer> REMOTE_TIMEOUT_MS =
      new ConfigKey<>(
          "remote_timeout_ms",
          1000,
          "milliseconds",
          "A remote get, exists or put slower than this is a miss or a dropped put (counted).",
          ConfigKey.positiveInt());

  /** Expiry of chunks in the remote store; 0 keeps them until the store evicts them. */
  public static final ConfigKey<Integer> REMOTE_TTL_SEC =
      new ConfigKey<>(
          "remote_ttl_sec",
          0,
          "seconds",
          "Expiry of chunks written to Redis/Valkey; 0 = none (the server's `maxmemory` policy"
              + " evicts).",
          ConfigKey.nonNegativeInt());

  /** Remote puts in flight before new ones are dropped (and counted). */
  public static final ConfigKey<Integer> REMOTE_QUEUE =
      new ConfigKey<>(
          "remote_queue",
          64,
          "chunks",
          "Remote puts in flight; beyond this a put is dropped and counted (the caller never"
              + " waits).",
          ConfigKey.positiveInt());

  /** On a Redis cluster, whether a prompt's chunks share a hash tag and so live on one node. */
  public static final ConfigKey<Boolean> REMOTE_HASH_TAGS =
      new ConfigKey<>(
          "remote_hash_tags",
          true,
          "",
          "On a Redis cluster, key chunks `kvtier:{<namespace>:<root>}:<hash>` so every chunk of"
              + " a prompt (and of every prompt with the same first chunk) lives on one node and a"
              + " lookup's pipelined reads go to one node. `false` spreads chunks over the nodes"
              + " by their own hash (`kvtier:<namespace>:<hash>`), which balances a few very"
              + " popular prefixes better. Chunks written under the other setting are not found"
              + " (misses). No effect elsewhere.",
          ConfigKey.bool());

  /** Longest time a lookup's pins may hold chunks before they are released, in seconds. */
  public static final ConfigKey<Integer> PIN_TIMEOUT_SEC =
      new ConfigKey<>(
          "pin_timeout_sec",
          300,
          "seconds",
          "Pins taken by a lookup (`lookupAndPin`) older than this are released and counted, so a"
              + " request that never ends cannot hold memory (LMCache's name and meaning).",
          ConfigKey.positiveInt());

  /** How often expired pins are looked for, in seconds. */
  public static final ConfigKey<Integer> PIN_CHECK_INTERVAL_SEC =
      new ConfigKey<>(
          "pin_check_interval_sec",
          30,
          "seconds",
          "How often expired pins are looked for.",
          ConfigKey.positiveInt());

  /**
   * How long a request may wait for a concurrent request's save of the chunk that would extend its
   * hit, in milliseconds; 0 never waits.
   */
  public static final ConfigKey<Integer> STORING_WAIT_MS =
      new ConfigKey<>(
          "storing_wait_ms",
          2000,
          "milliseconds",
          "How long a new request may wait for another request's save of the chunk that would"
              + " extend its hit (the same prompt sent again right after the first) before vLLM"
              + " computes it; 0 never waits: what is stored loads, the rest is computed. Never"
              + " waits for chunks vLLM's own prefix cache already holds.",
          ConfigKey.nonNegativeInt());

  /**
   * Where a hit from CPU memory is copied into vLLM's KV cache: inside the step that schedules the
   * request, or in the background while the request waits.
   */
  public static final ConfigKey<String> MEMORY_HIT_LOADS =
      new ConfigKey<>(
          "memory_hit_loads",
          "in_step",
          "",
          "Where a hit from CPU memory is copied into vLLM's KV cache: `in_step` inside the step"
              + " that schedules the request, so its first token comes in that step;"
              + " `background` while the request waits, whenever other requests are running (a"
              + " request alone still loads in its step), so the running requests' step never"
              + " waits for the copy and the waiting request takes one more step. Hits from disk"
              + " or a remote store always load in the background. `background` gave a lower"
              + " median time to first token under heavy contention and a higher one under"
              + " moderate load (docs/benchmarks.md).",
          ConfigKey.oneOf("in_step", "background"));

  /** Free-form settings, as in LMCache; kvtier reads the keys in {@link #EXTRA_CONFIG_KEYS}. */
  public static final ConfigKey<Map<String, Object>> EXTRA_CONFIG =
      new ConfigKey<>(
          "extra_config",
          Map.of(),
          "",
          "Further settings, as in LMCache; kvtier reads the `extra_config.*` entries below and"
              + " reports any other as ignored.",
          ConfigKey.map());

  /** Every supported key, in documentation order. */
  public static final List<ConfigKey<?>> KEYS =
      List.of(
          CHUNK_SIZE,
          LOCAL_CPU,
          MAX_LOCAL_CPU_SIZE,
          LOCAL_DISK,
          MAX_LOCAL_DISK_SIZE,
          LOCAL_DISK_PATH_SHARDING,
          REMOTE_URL,
          SAVE_UNFULL_CHUNK,
          SAVE_DECODE_CACHE,
          USE_LAYERWISE,
          CACHE_POLICY,
          COPY_DOWN_THREADS,
          COPY_DOWN_QUEUE,
          DISK_WRITE_THREADS,
          DISK_READ_THREADS,
          DISK_QUEUE,
          LOCAL_DISK_LZ4,
          REMOTE_TIMEOUT_MS,
          REMOTE_TTL_SEC,
          REMOTE_QUEUE,
          REMOTE_HASH_TAGS,
          PIN_TIMEOUT_SEC,
          PIN_CHECK_INTERVAL_SEC,
          STORING_WAIT_MS,
          MEMORY_HIT_LOADS,
          EXTRA_CONFIG);

  // ---- extra_config entries kvtier reads (named with their extra_config. prefix) ---------------

  /** O_DIRECT for the disk tier. */
  public static final ConfigKey<Boolean> EXTRA_USE_ODIRECT =
      new ConfigKey<>(
          "extra_config.use_odirect", false, "", "Disk tier I/O with O_DIRECT.", ConfigKey.bool());

  /** How a save on a GPU moves chunk bytes to pinned memory. */
  public static final ConfigKey<String> EXTRA_GPU_SAVE_MODE =
      new ConfigKey<>(
          "extra_config.gpu_save_mode",
          "mapped",
          "",
          "KV cache on a GPU: saves write pinned chunks from the gather kernel through the device"
              + " mapping (`mapped`), or gather into device staging and copy with the copy engine"
              + " (`dma`).",
          ConfigKey.oneOf("mapped", "dma"));

  /** How a load on a GPU moves chunk bytes from pinned memory. */
  public static final ConfigKey<String> EXTRA_GPU_LOAD_MODE =
      new ConfigKey<>(
          "extra_config.gpu_load_mode",
          "mapped",
          "",
          "The same choice for loads.",
          ConfigKey.oneOf("mapped", "dma"));

  /** The {@code extra_config} entries kvtier reads, in documentation order. */
  public static final List<ConfigKey<?>> EXTRA_CONFIG_KEYS =
      List.of(EXTRA_USE_ODIRECT, EXTRA_GPU_SAVE_MODE, EXTRA_GPU_LOAD_MODE);

  private static final String EXTRA_PREFIX = "extra_config.";

  /** {@code extra_config} entries kvtier reads, without the prefix; others are unsupported. */
  public static final Set<String> EXTRA_KEYS =
      EXTRA_CONFIG_KEYS.stream()
          .map(k -> k.name().substring(EXTRA_PREFIX.length()))
          .collect(java.util.stream.Collectors.toUnmodifiableSet());

  /** Environment variables with the KVTIER_ prefix that are not configuration keys. */
  static final Set<String> RESERVED_ENV =
      Set.of(
          "KVTIER_CONFIG_FILE",
          "KVTIER_CPUS",
          "KVTIER_JAVA_HOME",
          "KVTIER_JVM_HEAP",
          "KVTIER_JVM_OPTIONS",
          "KVTIER_JVM_AOT",
          "KVTIER_JVM_AOT_DIR",
          "KVTIER_BUILD_JAVA_HOME",
          "KVTIER_PYTHON",
          "KVTIER_LOG_LEVEL",
          "KVTIER_RUNTIME_DIR",
          "KVTIER_MODEL_CACHE",
          "KVTIER_SKIP_VLLM",
          "KVTIER_VLLM_DTYPE",
          "KVTIER_VLLM_THREADS");

  private final Map<String, Object> values; // key name -> parsed value; every key present
  private final Map<String, String> sources; // key name -> "default", "file <path> (...)", ...
  private final List<LmCacheKeys.Notice> notices;

  KvTierConfig(
      Map<String, Object> values, Map<String, String> sources, List<LmCacheKeys.Notice> notices) {
    this.values = Collections.unmodifiableMap(new LinkedHashMap<>(values));
    this.sources = Collections.unmodifiableMap(new LinkedHashMap<>(sources));
    this.notices = List.copyOf(notices);
  }

  /** The defaults alone. */
  public static KvTierConfig defaults() {
    return new ConfigLoader(Map.of()).load(Map.of());
  }

  /**
   * Builds a configuration from the defaults and {@code settings} alone, ignoring the file and the
   * environment (for embedding and tests).
   *
   * @throws ConfigException on any unknown key or malformed value
   */
  public static KvTierConfig of(Map<String, ?> settings) {
    return new ConfigLoader(Map.of()).load(settings);
  }

  /**
   * Loads the configuration of this process: {@code KVTIER_CONFIG_FILE}, the {@code KVTIER_*}
   * environment, then {@code overrides}.
   *
   * @throws ConfigException on any unknown key or malformed value
   */
  public static KvTierConfig load(Map<String, ?> overrides) {
    return new ConfigLoader(System.getenv()).load(overrides);
  }

  /**
   * Like {@link #load(Map)} without overrides, with {@code file} in place of {@code
   * KVTIER_CONFIG_FILE} (null: whatever the environment names), as {@code kvtier config check}
   * shows it.
   *
   * @throws ConfigException on any unknown key or malformed value, or a file that is not there
   */
  public static KvTierConfig loadWithFile(Path file) {
    Map<String, String> env = new HashMap<>(System.getenv());
    if (file != null) { // the file asked for, whichever variable names another
      env.put("KVTIER_CONFIG_FILE", file.toString());
      env.remove("LMCACHE_CONFIG_FILE");
    }
    return new ConfigLoader(env).load(Map.of());
  }

  /** Returns the value of {@code key}. */
  @SuppressWarnings("unchecked")
  public <T> T get(ConfigKey<T> key) {
    return (T) values.get(key.name());
  }

  /** Where the value of {@code key} came from, e.g. {@code default} or {@code env}. */
  public String sourceOf(ConfigKey<?> key) {
    return sources.get(key.name());
  }

  /**
   * Keys that were set and are ignored (LMCache keys with no kvtier meaning, {@code extra_config}
   * entries kvtier does not read), sorted.
   */
  public List<String> unsupportedKeys() {
    return notices.stream()
        .filter(LmCacheKeys.Notice::ignored)
        .map(LmCacheKeys.Notice::key)
        .sorted()
        .toList();
  }

  /**
   * The lines to log once at start-up about settings kvtier takes otherwise than they are written
   * (LMCache keys it ignores or maps, values it reads under another name), sorted by key; each is a
   * WARNING when the user loses a capability, else INFO. Values are shown with secrets masked.
   */
  public List<LmCacheKeys.Notice> notices() {
    return notices;
  }

  public int chunkTokens() {
    return get(CHUNK_SIZE);
  }

  public boolean localCpu() {
    return get(LOCAL_CPU);
  }

  public long maxLocalCpuBytes() {
    return get(MAX_LOCAL_CPU_SIZE);
  }

  /** Disk tier directories with any {@code file://} prefix removed; empty when off. */
  public List<Path> localDiskPaths() {
    List<Path> out = new ArrayList<>();
    for (String p : get(LOCAL_DISK)) {
      out.add(Path.of(p.startsWith("file://") ? p.substring("file://".length()) : p));
    }
    return out;
  }

  public long maxLocalDiskBytes() {
    return get(MAX_LOCAL_DISK_SIZE);
  }

  public DiskSharding localDiskPathSharding() {
    return get(LOCAL_DISK_PATH_SHARDING);
  }

  /**
   * The remote store URL, or null. It may hold a password: show it only through {@link
   * Redaction#url}.
   */
  public String remoteUrl() {
    return get(REMOTE_URL);
  }

  public boolean saveUnfullChunk() {
    return get(SAVE_UNFULL_CHUNK);
  }

  public boolean saveDecodeCache() {
    return get(SAVE_DECODE_CACHE);
  }

  public boolean useLayerwise() {
    return get(USE_LAYERWISE);
  }

  public CachePolicy cachePolicy() {
    return get(CACHE_POLICY);
  }

  public int copyDownThreads() {
    return get(COPY_DOWN_THREADS);
  }

  public int copyDownQueue() {
    return get(COPY_DOWN_QUEUE);
  }

  public int diskWriteThreads() {
    return get(DISK_WRITE_THREADS);
  }

  public int diskReadThreads() {
    return get(DISK_READ_THREADS);
  }

  public int diskQueue() {
    return get(DISK_QUEUE);
  }

  public boolean localDiskLz4() {
    return get(LOCAL_DISK_LZ4);
  }

  public int remoteTimeoutMs() {
    return get(REMOTE_TIMEOUT_MS);
  }

  public int storingWaitMs() {
    return get(STORING_WAIT_MS);
  }

  /** {@link #MEMORY_HIT_LOADS}: {@code in_step} or {@code background}. */
  public String memoryHitLoads() {
    return get(MEMORY_HIT_LOADS);
  }

  public int remoteTtlSec() {
    return get(REMOTE_TTL_SEC);
  }

  public int remoteQueue() {
    return get(REMOTE_QUEUE);
  }

  public boolean remoteHashTags() {
    return get(REMOTE_HASH_TAGS);
  }

  public int pinTimeoutSec() {
    return get(PIN_TIMEOUT_SEC);
  }

  public int pinCheckIntervalSec() {
    return get(PIN_CHECK_INTERVAL_SEC);
  }

  /** {@code extra_config.use_odirect}: O_DIRECT for the disk tier (default false). */
  public boolean useODirect() {
    return extra(EXTRA_USE_ODIRECT);
  }

  /**
   * {@code extra_config.gpu_save_mode}: how a save on a GPU moves chunk bytes to pinned memory,
   * {@code mapped} (the gather kernel writes them through the device mapping; default) or {@code
   * dma} (gather into device staging, then one copy-engine transfer).
   */
  public String gpuSaveMode() {
    return extra(EXTRA_GPU_SAVE_MODE);
  }

  /** {@code extra_config.gpu_load_mode}: as {@link #gpuSaveMode}, for loads (default mapped). */
  public String gpuLoadMode() {
    return extra(EXTRA_GPU_LOAD_MODE);
  }

  /**
   * The value of an {@code extra_config} entry, or its default when absent.
   *
   * @throws ConfigException if the value is not allowed
   */
  private <T> T extra(ConfigKey<T> key) {
    Object v = get(EXTRA_CONFIG).get(key.name().substring(EXTRA_PREFIX.length()));
    return v == null ? key.defaultValue() : key.parse(v);
  }

  /**
   * A multi-line description of every key, its value and its source, then the {@link #notices()}
   * (as {@code kvtier config check} prints it). Secrets are masked ({@link Redaction}): the
   * password of {@code remote_url}, and {@code extra_config} entries with secret names.
   */
  public String describe() {
    StringBuilder sb = new StringBuilder(describeSettings());
    for (LmCacheKeys.Notice n : notices) {
      sb.append(String.format("%n  %s: %s", n.level(), n.text()));
    }
    return sb.toString();
  }

  /**
   * {@link #describe()} without the notices: what an engine logs once at start-up, before it logs
   * each notice at its own level.
   */
  public String describeSettings() {
    StringBuilder sb = new StringBuilder("kvtier configuration:");
    for (ConfigKey<?> key : KEYS) {
      sb.append(String.format(Locale.ROOT, "%n  %-26s = %s", key.name(), render(key)))
          .append("  (")
          .append(sources.get(key.name()))
          .append(')');
    }
    return sb.toString();
  }

  private String render(ConfigKey<?> key) {
    Object v = values.get(key.name());
    if (key == MAX_LOCAL_CPU_SIZE || key == MAX_LOCAL_DISK_SIZE) {
      return String.format(Locale.ROOT, "%.3f GB", (Long) v / (double) (1L << 30));
    }
    if (v instanceof DiskSharding s) {
      return s.configName();
    }
    return Redaction.value(key.name(), v);
  }

  /** As {@link #describe()}: secrets masked. */
  @Override
  public String toString() {
    return describe();
  }

  /** Sorted names, for messages. */
  static List<String> sortedKeyNames() {
    Set<String> names = new TreeSet<>();
    KEYS.forEach(k -> names.add(k.name()));
    return List.copyOf(names);
  }
}
