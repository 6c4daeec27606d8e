package io.kvtier.config;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

/**
 * Builds a {@link KvTierConfig} from its sources, later ones winning: defaults; one configuration
 * file ({@code KVTIER_CONFIG_FILE}, or LMCache's {@code LMCACHE_CONFIG_FILE}; both set is an
 * error); LMCache's {@code LMCACHE_<KEY>} variables; {@code KVTIER_<KEY>} variables; the overrides
 * (vLLM's {@code kv_connector_extra_config}, where LMCache's {@code lmcache.} prefix is accepted).
 * LMCache's keys are read as {@link LmCacheKeys} says. The environment is injected so tests need
 * not touch the real one.
 *
 * <p>Confined to one thread per {@link #load} call; instances hold no mutable state.
 */
final class ConfigLoader {
  private static final Map<String, ConfigKey<?>> BY_NAME = new HashMap<>();

  static {
    KvTierConfig.KEYS.forEach(k -> BY_NAME.put(k.name(), k));
  }

  /** The supported key named {@code name}, or null. */
  static ConfigKey<?> key(String name) {
    return BY_NAME.get(name);
  }

  /** The prefix LMCache's vLLM connector reads its keys with in kv_connector_extra_config. */
  static final String LMCACHE_PREFIX = "lmcache.";

  private final Map<String, String> env;

  ConfigLoader(Map<String, String> env) {
    this.env = Map.copyOf(env);
  }

  /** What the sources set so far: values and where each came from, and the notices. */
  private static final class Layers {
    final Map<String, Object> values = new LinkedHashMap<>();
    final Map<String, String> sources = new LinkedHashMap<>();
    final Map<String, LmCacheKeys.Notice> notices = new TreeMap<>();
  }

  KvTierConfig load(Map<String, ?> overrides) {
    Layers layers = new Layers();
    for (ConfigKey<?> key : KvTierConfig.KEYS) {
      layers.values.put(key.name(), key.defaultValue());
      layers.sources.put(key.name(), "default");
    }

    String kvtierFile = nonBlank(env.get("KVTIER_CONFIG_FILE"));
    String lmcacheFile = nonBlank(env.get("LMCACHE_CONFIG_FILE"));
    if (kvtierFile != null && lmcacheFile != null) {
      throw new ConfigException(
          "both KVTIER_CONFIG_FILE="
              + kvtierFile
              + " and LMCACHE_CONFIG_FILE="
              + lmcacheFile
              + " are set; kvtier reads one configuration file: unset one of them");
    }
    if (kvtierFile != null || lmcacheFile != null) {
      String variable = kvtierFile != null ? "KVTIER_CONFIG_FILE" : "LMCACHE_CONFIG_FILE";
      String file = kvtierFile != null ? kvtierFile : lmcacheFile;
      Path path = Path.of(file);
      if (!Files.isRegularFile(path)) {
        throw new ConfigException(
            variable + "=" + file + " does not exist or is not a regular file");
      }
      String source = "file " + path + " (" + variable + ")";
      apply(YamlSource.readFile(path, variable), name -> source, layers);
    }

    Map<String, Object> lmcacheEnv = new TreeMap<>();
    for (String name : LmCacheKeys.names()) {
      String value = env.get("LMCACHE_" + name.toUpperCase(Locale.ROOT));
      if (value != null) {
        lmcacheEnv.put(name, unquoted(value));
      }
    }
    apply(lmcacheEnv, name -> "env LMCACHE_" + name.toUpperCase(Locale.ROOT), layers);

    Map<String, Object> kvtierEnv = new TreeMap<>();
    for (Map.Entry<String, String> e : env.entrySet()) {
      String name = e.getKey();
      if (name.startsWith("KVTIER_") && !KvTierConfig.RESERVED_ENV.contains(name)) {
        kvtierEnv.put(name.substring("KVTIER_".length()).toLowerCase(Locale.ROOT), e.getValue());
      }
    }
    apply(kvtierEnv, name -> "env KVTIER_" + name.toUpperCase(Locale.ROOT), layers);

    if (overrides != null) {
      apply(withoutLmCachePrefix(overrides), name -> "kv_connector_extra_config", layers);
    }

    @SuppressWarnings("unchecked")
    Map<String, Object> extra = (Map<String, Object>) layers.values.get("extra_config");
    String extraSource = layers.sources.get("extra_config");
    for (Map.Entry<String, Object> e : extra.entrySet()) {
      if (!KvTierConfig.EXTRA_KEYS.contains(e.getKey())) {
        String name = "extra_config." + e.getKey();
        String text =
            name
                + "="
                + Redaction.value(e.getKey(), e.getValue())
                + " (from "
                + extraSource
                + ") is ignored: kvtier reads only "
                + KvTierConfig.EXTRA_KEYS.stream().sorted().map(k -> "extra_config." + k).toList();
        layers.notices.put(name, new LmCacheKeys.Notice(name, LmCacheKeys.Level.INFO, true, text));
      }
    }
    KvTierConfig config =
        new KvTierConfig(layers.values, layers.sources, List.copyOf(layers.notices.values()));
    validate(config);
    return config;
  }

  /**
   * Applies one source's settings; {@code sourceOf} names where a key's value came from. Within one
   * source, a key given under two names that mean the same (an LMCache alias, a mapped key and its
   * kvtier name) is an error.
   */
  private static void apply(
      Map<String, ?> raw, java.util.function.Function<String, String> sourceOf, Layers layers) {
    Map<String, String> setBy = new HashMap<>();
    for (Map.Entry<String, ?> e : raw.entrySet()) {
      String name = e.getKey();
      String source = sourceOf.apply(name);
      Object v = e.getValue();
      LmCacheKeys.Treatment lmcache = BY_NAME.containsKey(name) ? null : LmCacheKeys.of(name);
      if (!BY_NAME.containsKey(name) && lmcache == null) {
        throw new ConfigException(
            "unknown configuration key '"
                + name
                + "' (from "
                + source
                + "); did you mean '"
                + closest(name)
                + "'? Supported keys: "
                + KvTierConfig.sortedKeyNames());
      }
      String meaning =
          lmcache == null ? name : lmcache.target() != null ? lmcache.target() : lmcache.key();
      String other = setBy.putIfAbsent(meaning, name);
      if (other != null) {
        throw new ConfigException(
            "both '"
                + other
                + "' and '"
                + name
                + "' are set (from "
                + source
                + "); they mean the"
                + " same: keep one");
      }
      if (lmcache != null && lmcache.kind() == LmCacheKeys.Kind.IGNORED) {
        layers.notices.put(lmcache.key(), LmCacheKeys.notice(name, v, source));
        continue;
      }
      ConfigKey<?> key = BY_NAME.get(meaning);
      try {
        Object value = LmCacheKeys.convert(name, v);
        layers.values.put(meaning, value == null ? key.defaultValue() : key.parse(value));
      } catch (ConfigException ex) {
        throw new ConfigException(ex.getMessage() + " (from " + source + ")");
      }
      layers.sources.put(meaning, lmcache == null ? source : source + ", as " + name);
      LmCacheKeys.Notice valueNotice = LmCacheKeys.valueNotice(name, v, source);
      if (valueNotice != null) {
        layers.notices.put(meaning, valueNotice);
      } else {
        layers.notices.remove(meaning);
      }
    }
  }

  /**
   * The overrides with LMCache's {@code lmcache.} prefix taken off its keys ({@code
   * lmcache.chunk_size} is {@code chunk_size}); a key given with and without it is an error.
   */
  static Map<String, Object> withoutLmCachePrefix(Map<String, ?> overrides) {
    Map<String, Object> out = new LinkedHashMap<>();
    for (Map.Entry<String, ?> e : overrides.entrySet()) {
      String name = e.getKey();
      String bare =
          name.startsWith(LMCACHE_PREFIX) ? name.substring(LMCACHE_PREFIX.length()) : name;
      if (out.containsKey(bare)) {
        throw new ConfigException(
            "kv_connector_extra_config sets both '"
                + bare
                + "' and '"
                + LMCACHE_PREFIX
                + bare
                + "'; keep one");
      }
      out.put(bare, e.getValue());
    }
    return out;
  }

  /** A value of LMCache's environment with one pair of surrounding quotes removed, as LMCache. */
  static String unquoted(String value) {
    String v = value.trim();
    if (v.length() >= 2
        && (v.charAt(0) == '"' || v.charAt(0) == '\'')
        && v.charAt(v.length() - 1) == v.charAt(0)) {
      return v.substring(1, v.length() - 1);
    }
    return value;
  }

  private static String nonBlank(String s) {
    return s == null || s.isBlank() ? null : s;
  }

  private static void validate(KvTierConfig c) {
    c.gpuSaveMode();
    c.gpuLoadMode();
    c.useODirect();
    boolean noLowerTier = c.localDiskPaths().isEmpty() && c.remoteUrl() == null;
    if (!c.localCpu() && noLowerTier) {
      throw new ConfigException(
          "local_cpu=false leaves no tier to keep chunks in: set local_disk or remote_url (or"
              + " local_cpu=true)"
              + disaggregatedPrefillHint(c));
    }
    if (c.maxLocalCpuBytes() == 0) {
      throw new ConfigException(
          (c.localCpu()
                  ? "max_local_cpu_size=0 with local_cpu=true; set a size in GB > 0"
                  : "max_local_cpu_size=0 with local_cpu=false; the CPU tier still stages chunks"
                      + " on their way to the lower tiers: set a size in GB > 0")
              + disaggregatedPrefillHint(c));
    }
    if (!c.localDiskPaths().isEmpty() && c.maxLocalDiskBytes() == 0) {
      throw new ConfigException(
          "local_disk="
              + c.get(KvTierConfig.LOCAL_DISK)
              + " needs max_local_disk_size > 0 (GB); it is 0");
    }
  }

  /**
   * For a configuration written for LMCache's disaggregated prefill (LMCache's decoders keep no
   * chunks of their own), what kvtier offers instead; else empty.
   */
  private static String disaggregatedPrefillHint(KvTierConfig c) {
    boolean pd =
        c.notices().stream()
            .anyMatch(n -> n.key().equals("enable_pd") && n.level() == LmCacheKeys.Level.WARNING);
    return pd
        ? ". This is a configuration for LMCache's disaggregated prefill, which kvtier does not"
            + " have: give the prefill and the decode instances the same remote_url (kvtier-server"
            + " or Redis) so that decoders load what prefillers saved, or run vLLM's NixlConnector"
        : "";
  }

  /**
   * The known key (supported or recognised) closest to {@code name}: the shortest key containing it
   * if there is one (a truncated name), else the one at the smallest edit distance.
   */
  static String closest(String name) {
    String best = null;
    int bestDistance = Integer.MAX_VALUE;
    Set<String> candidates = new TreeSet<>(BY_NAME.keySet());
    candidates.addAll(LmCacheKeys.names());
    for (String candidate : candidates) {
      int d =
          candidate.contains(name)
              ? candidate.length() - name.length() - 1_000_000
              : editDistance(name, candidate);
      if (d < bestDistance) {
        best = candidate;
        bestDistance = d;
      }
    }
    return best;
  }

  /** Levenshtein distance with unit costs. */
  static int editDistance(String a, String b) {
    int[] prev = new int[b.length() + 1];
    int[] cur = new int[b.length() + 1];
    for (int j = 0; j <= b.length(); j++) {
      prev[j] = j;
    }
    for (int i = 1; i <= a.length(); i++) {
      cur[0] = i;
      for (int j = 1; j <= b.length(); j++) {
        int cost = a.charAt(i - 1) == b.charAt(j - 1) ? 0 : 1;
        cur[j] = Math.min(Math.min(cur[j - 1] + 1, prev[j] + 1), prev[j - 1] + cost);
      }
      int[] t = prev;
      prev = cur;
      cur = t;
    }
    return prev[b.length()];
  }
}
