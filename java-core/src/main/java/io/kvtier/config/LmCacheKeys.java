package io.kvtier.config;

import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.function.Predicate;

/**
 * What kvtier does with each key of LMCache's configuration (LMCache 0.5.6), so that an LMCache
 * configuration loads unchanged and says what it does not get.
 *
 * <ul>
 *   <li>{@link Kind#HONOURED}: a kvtier key of the same name and meaning.
 *   <li>{@link Kind#MAPPED}: the same meaning under a kvtier name ({@code blocking_timeout_secs} is
 *       {@code remote_timeout_ms}); LMCache's older names ({@link #ALIASES}) are read as the names
 *       they stand for.
 *   <li>{@link Kind#IGNORED}: no kvtier meaning. Setting one gives a {@link Notice} at start-up: a
 *       WARNING when the value turns on a capability kvtier lacks (P2P, disaggregated prefill,
 *       blending, GDS, the hidden-state cache...), naming it and what to use instead; INFO for
 *       everything else (tuning knobs, or a capability left off).
 * </ul>
 *
 * <p>Stateless and thread-safe (the tables are immutable).
 */
public final class LmCacheKeys {
  /** What kvtier does with an LMCache key. */
  public enum Kind {
    HONOURED,
    MAPPED,
    IGNORED
  }

  /**
   * How kvtier treats one LMCache key.
   *
   * @param key LMCache's name
   * @param kind honoured, mapped or ignored
   * @param target the kvtier key it sets (honoured and mapped keys), else null
   * @param feature what LMCache does with it that kvtier does not (ignored keys), else null
   * @param instead what kvtier offers instead, or null
   * @param enables whether a value turns on a capability kvtier lacks (then a WARNING); null for
   *     keys that are never more than tuning
   */
  public record Treatment(
      String key,
      Kind kind,
      String target,
      String feature,
      String instead,
      Predicate<Object> enables) {

    /** One line for the migration guide: what kvtier does with the key. */
    public String summary() {
      return switch (kind) {
        case HONOURED -> "honoured: same name and meaning";
        case MAPPED -> "mapped to `" + target + "`" + (instead == null ? "" : ": " + instead);
        case IGNORED ->
            (enables == null ? "ignored (INFO): " : "ignored (WARNING when on): ")
                + feature
                + (instead == null ? "" : "; " + instead);
      };
    }
  }

  /** The level of a start-up notice. */
  public enum Level {
    INFO,
    WARNING
  }

  /**
   * A start-up line about an LMCache key kvtier does not honour as it stands.
   *
   * @param key the key as LMCache names it
   * @param level WARNING when the user loses a capability, else INFO
   * @param ignored whether the setting has no effect in kvtier (else it is read under another name
   *     or meaning)
   * @param text the whole line, the value shown with its secrets masked
   */
  public record Notice(String key, Level level, boolean ignored, String text) {}

  /** LMCache's older names, read as the names they stand for (LMCache 0.5.6 does the same). */
  static final Map<String, String> ALIASES =
      Map.ofEntries(
          Map.entry("enable_xpyd", "enable_pd"),
          Map.entry("nixl_peer_host", "pd_peer_host"),
          Map.entry("nixl_peer_init_port", "pd_peer_init_port"),
          Map.entry("nixl_peer_alloc_port", "pd_peer_alloc_port"),
          Map.entry("nixl_proxy_host", "pd_proxy_host"),
          Map.entry("nixl_proxy_port", "pd_proxy_port"),
          Map.entry("nixl_buffer_size", "pd_buffer_size"),
          Map.entry("nixl_role", "pd_role"),
          Map.entry("controller_url", "controller_pull_url"),
          Map.entry("lmcache_worker_port", "lmcache_worker_ports"),
          Map.entry("plugin_locations", "runtime_plugin_locations"),
          Map.entry("external_backends", "storage_plugins"));

  /** The values of {@code remote_serde} LMCache accepts. */
  static final Set<String> REMOTE_SERDES = Set.of("naive", "kivi", "cachegen");

  private static final Predicate<Object> ON = LmCacheKeys::isOn;

  private static final Map<String, Treatment> TABLE = build();

  /**
   * Keys of older LMCache releases that LMCache's published examples still carry and LMCache 0.5.6
   * ignores (with a warning): read like ignored keys, so those examples load here too.
   */
  private static final Map<String, Treatment> OLDER = buildOlder();

  private LmCacheKeys() {}

  /** Every LMCache key kvtier knows (not the {@link #ALIASES}), in LMCache's order. */
  public static Collection<Treatment> all() {
    return TABLE.values();
  }

  /**
   * The treatment of {@code name} (an alias is resolved; a key of an older LMCache is ignored), or
   * null if LMCache has no such key.
   */
  public static Treatment of(String name) {
    Treatment t = TABLE.get(ALIASES.getOrDefault(name, name));
    return t != null ? t : OLDER.get(name);
  }

  /** Every name LMCache reads: its keys and their older names. */
  public static Set<String> names() {
    Set<String> names = new java.util.TreeSet<>(TABLE.keySet());
    names.addAll(ALIASES.keySet());
    return names;
  }

  /**
   * The notice for an ignored key set to {@code value} from {@code source}; null for a key that is
   * not ignored.
   *
   * @param written the name as the user wrote it (an alias is named as such)
   */
  static Notice notice(String written, Object value, String source) {
    Treatment t = of(written);
    if (t == null || t.kind() != Kind.IGNORED) {
      return null;
    }
    String shown = written + "=" + Redaction.value(written, value);
    String alias = written.equals(t.key()) ? "" : " (LMCache's older name for " + t.key() + ")";
    if (t.key().equals("remote_serde")) { // null (LMCache allows it) stores raw bytes too
      String serde = value == null ? "naive" : String.valueOf(value).trim();
      return serdeNotice(shown, serde.toLowerCase(Locale.ROOT), source);
    }
    boolean warns = t.enables() != null && t.enables().test(value);
    String why;
    if (t.enables() == null) {
      why = t.feature();
    } else if (warns) {
      why = "kvtier has no " + t.feature() + (t.instead() == null ? "" : "; " + t.instead());
    } else {
      why = "kvtier has no " + t.feature() + ", and this value leaves it off";
    }
    String text = "LMCache's " + shown + alias + " (from " + source + ") is ignored: " + why;
    return new Notice(t.key(), warns ? Level.WARNING : Level.INFO, true, text);
  }

  /**
   * {@code value} of key {@code name} as the kvtier key it sets expects it: LMCache's {@code LFU}
   * policy is kvtier's {@code TINYLFU}; {@code blocking_timeout_secs} becomes milliseconds. Other
   * values are returned as they are (the kvtier key parses them).
   *
   * @throws ConfigException for a timeout that is not a number
   */
  static Object convert(String name, Object value) {
    if (value == null) {
      return null;
    }
    if (name.equals("cache_policy") && isLfu(value)) {
      return CachePolicy.TINYLFU.name();
    }
    if (name.equals("blocking_timeout_secs")) {
      try {
        return Math.round(Double.parseDouble(String.valueOf(value).trim()) * 1000);
      } catch (NumberFormatException e) {
        throw new ConfigException(
            "blocking_timeout_secs=" + value + " is not a number of seconds (e.g. 10)");
      }
    }
    return value;
  }

  /**
   * An INFO line for a value kvtier takes with another name or meaning (a mapped key, LMCache's
   * {@code LFU}); null when it is taken as it is.
   */
  static Notice valueNotice(String name, Object value, String source) {
    if (value == null) {
      return null;
    }
    if (name.equals("cache_policy") && isLfu(value)) {
      return new Notice(
          name,
          Level.INFO,
          false,
          "cache_policy=LFU (from "
              + source
              + ") is kvtier's TINYLFU: Caffeine's W-TinyLFU, which evicts by frequency and"
              + " ages old counts");
    }
    Treatment t = of(name);
    if (t != null && t.kind() == Kind.MAPPED) {
      return new Notice(
          t.target(),
          Level.INFO,
          false,
          "LMCache's "
              + name
              + "="
              + value
              + " (from "
              + source
              + ") is kvtier's "
              + t.target()
              + "="
              + convert(name, value));
    }
    return null;
  }

  private static boolean isLfu(Object value) {
    return String.valueOf(value).trim().equalsIgnoreCase("LFU");
  }

  private static Notice serdeNotice(String shown, String serde, String source) {
    if (!REMOTE_SERDES.contains(serde)) {
      throw new ConfigException(
          shown + " (from " + source + ") is not one of LMCache's serdes " + REMOTE_SERDES);
    }
    boolean naive = serde.equals("naive");
    String text =
        "LMCache's "
            + shown
            + " (from "
            + source
            + "): kvtier stores chunks in the remote store as raw KV bytes"
            + (naive
                ? ", as naive does"
                : ", not " + serde + "-compressed: each chunk takes its full size there");
    return new Notice("remote_serde", naive ? Level.INFO : Level.WARNING, true, text);
  }

  /**
   * Whether an LMCache value turns something on: true, a non-zero number, a non-empty string, list
   * or mapping.
   */
  static boolean isOn(Object value) {
    return switch (value) {
      case null -> false;
      case Boolean b -> b;
      case Number n -> n.doubleValue() != 0;
      case String s ->
          !s.isBlank()
              && !Set.of("false", "0", "no", "off", "null", "none")
                  .contains(s.trim().toLowerCase(Locale.ROOT));
      case Collection<?> c -> !c.isEmpty();
      case Map<?, ?> m -> !m.isEmpty();
      default -> true;
    };
  }

  // ---- the table ------------------------------------------------------------------------------

  private static Map<String, Treatment> build() {
    Map<String, Treatment> t = new LinkedHashMap<>();
    for (String k :
        List.of(
            "chunk_size",
            "local_cpu",
            "max_local_cpu_size",
            "local_disk",
            "local_disk_path_sharding",
            "max_local_disk_size",
            "remote_url",
            "use_layerwise",
            "save_decode_cache",
            "extra_config",
            "save_unfull_chunk",
            "cache_policy",
            "pin_timeout_sec",
            "pin_check_interval_sec")) {
      t.put(k, new Treatment(k, Kind.HONOURED, k, null, null, null));
    }
    t.put(
        "blocking_timeout_secs",
        new Treatment(
            "blocking_timeout_secs",
            Kind.MAPPED,
            KvTierConfig.REMOTE_TIMEOUT_MS.name(),
            null,
            "seconds times 1000 (a remote get, exists or put slower than this is a miss)",
            null));
    t.put(
        "remote_serde",
        new Treatment(
            "remote_serde",
            Kind.IGNORED,
            null,
            "kivi or cachegen compression of remote chunks",
            "kvtier stores raw KV bytes in the remote store",
            v -> !String.valueOf(v).trim().equalsIgnoreCase("naive")));

    feature(
        t,
        "enable_p2p",
        ON,
        "P2P sharing of KV caches between vLLM instances",
        "instances share chunks through a common remote store (kvtier-server or Redis)",
        "p2p_host",
        "p2p_init_ports",
        "p2p_lookup_ports");
    feature(
        t,
        "enable_pd",
        ON,
        "disaggregated prefill (KV caches sent from prefill to decode instances over NIXL)",
        "a decode instance loads what a prefill instance saved to a shared remote store; for"
            + " direct transfers run vLLM's NixlConnector",
        "pd_role",
        "pd_buffer_size",
        "pd_buffer_device",
        "pd_peer_host",
        "pd_peer_init_port",
        "pd_peer_alloc_port",
        "pd_peer_query_port",
        "pd_proxy_host",
        "pd_proxy_port",
        "pd_allocation_timeout_sec",
        "pd_shutdown_timeout_sec",
        "pd_condition_poll_interval_sec",
        "pd_max_prefill_len",
        "pd_backend_mode",
        "pd_skip_proxy_notification",
        "pd_bidirectional",
        "transfer_channel",
        "nixl_backends",
        "nixl_buffer_device",
        "nixl_peer_port");
    feature(
        t,
        "enable_blending",
        ON,
        "CacheBlend (reusing the KV cache of text that is not a prefix, recomputing a part)",
        "kvtier reuses prefixes only",
        "blend_recompute_ratios",
        "blend_thresholds",
        "blend_check_layers",
        "blend_min_tokens",
        "blend_special_str");
    feature(
        t,
        "gds_path",
        ON,
        "GPUDirect Storage tier (GPU memory to NVMe without a CPU copy)",
        "use local_disk (written from pinned CPU memory)",
        "gds_path_sharding",
        "gds_buffer_size",
        "use_gds",
        "gds_backend");
    feature(
        t,
        "maru_path",
        ON,
        "Maru tier (shared CXL memory)",
        "kvtier-server shares a memory tier over the network",
        "maru_pool_size");
    feature(
        t,
        "enable_hidden_state_cache",
        ON,
        "hidden-state cache",
        null,
        "max_hidden_state_cpu_size",
        "hidden_state_layers",
        "hidden_states_retrieve_mode");
    feature(
        t,
        "enable_controller",
        ON,
        "controller (cluster-wide lookup, pinning, clearing and moving of KV caches)",
        "kvtier publishes KV events for its tiers to vLLM's KV event stream, for KV-aware routers",
        "lmcache_instance_id",
        "controller_pull_url",
        "controller_reply_url",
        "lmcache_worker_ports",
        "lmcache_worker_ids",
        "lmcache_worker_heartbeat_delay_time",
        "lmcache_worker_heartbeat_time");
    feature(
        t,
        "internal_api_server_enabled",
        ON,
        "internal API server (per-worker HTTP inspection and scripts)",
        "kvtier's series are on vLLM's /metrics",
        "internal_api_server_host",
        "internal_api_server_port_start",
        "internal_api_server_include_index_list",
        "internal_api_server_socket_path_prefix",
        "script_allowed_imports",
        "run_script_api_enabled");
    feature(
        t,
        "enable_chunk_statistics",
        ON,
        "chunk statistics (counting distinct chunks)",
        "kvtier's series are on vLLM's /metrics",
        "chunk_statistics_auto_start_statistics",
        "chunk_statistics_auto_exit_timeout_hours",
        "chunk_statistics_auto_exit_target_unique_chunks",
        "chunk_statistics_strategy");
    feature(
        t,
        "remote_config_url",
        ON,
        "remote configuration service (settings fetched at start-up)",
        "set the values in kvtier's configuration",
        "app_id");
    feature(t, "runtime_plugin_locations", ON, "runtime plugins", null);
    feature(
        t,
        "storage_plugins",
        ON,
        "storage backend plugins",
        "kvtier's tiers are CPU memory, local_disk and remote_url");
    feature(
        t,
        "remote_storage_plugins",
        ON,
        "remote storage plugins",
        "remote_url takes Redis/Valkey or kvtier-server");
    feature(
        t,
        "external_lookup_client",
        ON,
        "external lookup client (asking another system which prefixes it holds)",
        "kvtier's lookups ask its own tiers");
    feature(
        t,
        "retrieve_locations",
        ON,
        "choice of the backends loads read from",
        "kvtier reads its tiers in order: CPU memory, disk, remote");
    feature(
        t,
        "store_location",
        ON,
        "choice of one backend that saves go to",
        "kvtier saves to every configured tier");
    feature(
        t,
        "priority_limit",
        ON,
        "priority limit (requests above it are not saved)",
        "kvtier saves every request");

    tuning(
        t,
        "local_cpu_use_hugepages",
        "kvtier's CPU tier maps ordinary pages, lazily, in 256 MiB slabs");
    tuning(t, "reserve_local_cpu_size", "kvtier reserves no CPU memory beyond max_local_cpu_size");
    tuning(
        t,
        "pre_caching_hash_algorithm",
        "kvtier names chunks with its own hash of the tokens (docs/keys.md)");
    tuning(t, "mp_host", "part of LMCache's multi-process mode; kvtier runs in vLLM's workers");
    tuning(t, "mp_port", "part of LMCache's multi-process mode; kvtier runs in vLLM's workers");
    tuning(t, "audit_actual_remote_url", "part of LMCache's audit connector");
    tuning(
        t,
        "py_enable_gc",
        "kvtier keeps its data in its Java core, off Python's heap; the Python collector is left"
            + " as vLLM runs it");
    tuning(t, "numa_mode", "kvtier does not bind its buffers to NUMA nodes");
    tuning(
        t,
        "enable_async_loading",
        "kvtier always loads hits from disk and the remote store in the background (hits in CPU"
            + " memory as memory_hit_loads says)");
    tuning(t, "lookup_timeout_ms", "kvtier's remote lookups are bounded by remote_timeout_ms");
    tuning(
        t,
        "min_retrieve_tokens",
        "kvtier loads every hit of one whole chunk or more (chunk_size tokens)");
    tuning(t, "hit_miss_ratio", "a test knob of LMCache's");
    tuning(t, "lookup_server_worker_ids", "part of LMCache's lookup server; kvtier asks each rank");
    tuning(
        t,
        "enable_scheduler_bypass_lookup",
        "part of LMCache's lookup client; kvtier's scheduler side always looks up");
    tuning(
        t,
        "enable_lazy_memory_allocator",
        "kvtier's CPU tier is always mapped lazily, in 256 MiB slabs");
    for (String k :
        List.of(
            "lazy_memory_initial_ratio",
            "lazy_memory_expand_trigger_ratio",
            "lazy_memory_step_ratio",
            "lazy_memory_safe_size")) {
      tuning(t, k, "part of LMCache's lazy allocator; kvtier's CPU tier is always mapped lazily");
    }
    tuning(
        t,
        "enable_kv_events",
        "kvtier publishes its tiers' KV events whenever vLLM's --kv-events-config turns them on");
    tuning(t, "use_gpu_connector_v3", "kvtier copies with its own GPU path");
    return java.util.Collections.unmodifiableMap(t);
  }

  private static Map<String, Treatment> buildOlder() {
    String older = "a setting of an older LMCache, which LMCache 0.5.6 does not read either";
    Map<String, Treatment> t = new LinkedHashMap<>();
    tuning(t, "local_device", older + "; local_cpu, local_disk and remote_url choose the tiers");
    tuning(t, "pipelined_backend", older);
    tuning(t, "lookup_url", older + " (P2P)");
    tuning(t, "distributed_url", older + " (P2P)");
    feature(
        t,
        "enable_nixl",
        ON,
        "disaggregated prefill (enable_nixl is " + older + "; its name now is enable_pd)",
        null,
        "nixl_receiver_host",
        "nixl_receiver_port",
        "nixl_enable_gc");
    return java.util.Collections.unmodifiableMap(t);
  }

  /**
   * A capability kvtier lacks: its key warns when {@code enables} holds for the value; its tuning
   * keys are INFO.
   */
  private static void feature(
      Map<String, Treatment> t,
      String key,
      Predicate<Object> enables,
      String feature,
      String instead,
      String... tuning) {
    t.put(key, new Treatment(key, Kind.IGNORED, null, feature, instead, enables));
    for (String k : tuning) {
      String part = "a setting of LMCache's " + feature + ", which kvtier does not have";
      t.put(k, new Treatment(k, Kind.IGNORED, null, part, null, null));
    }
  }

  private static void tuning(Map<String, Treatment> t, String key, String why) {
    t.put(key, new Treatment(key, Kind.IGNORED, null, why, null, null));
  }
}
