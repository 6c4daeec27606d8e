package io.kvtier.config;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

/**
 * Builds a {@link KvTierConfig} from defaults, a YAML file, the environment and overrides, in that
 * order. The environment is injected so tests need not touch the real one.
 *
 * <p>Confined to one thread per {@link #load} call; instances hold no mutable state.
 */
final class ConfigLoader {
  private static final Map<String, ConfigKey<?>> BY_NAME = new HashMap<>();

  static {
    KvTierConfig.KEYS.forEach(k -> BY_NAME.put(k.name(), k));
  }

  private final Map<String, String> env;

  ConfigLoader(Map<String, String> env) {
    this.env = Map.copyOf(env);
  }

  KvTierConfig load(Map<String, ?> overrides) {
    Map<String, Object> values = new LinkedHashMap<>();
    Map<String, String> sources = new LinkedHashMap<>();
    for (ConfigKey<?> key : KvTierConfig.KEYS) {
      values.put(key.name(), key.defaultValue());
      sources.put(key.name(), "default");
    }
    Set<String> unsupported = new TreeSet<>();

    String file = env.get("KVTIER_CONFIG_FILE");
    if (file != null && !file.isBlank()) {
      Path path = Path.of(file);
      if (!Files.isRegularFile(path)) {
        throw new ConfigException(
            "KVTIER_CONFIG_FILE=" + file + " does not exist or is not a regular file");
      }
      apply(YamlSource.readFile(path), "file " + path, values, sources, unsupported);
    }

    Map<String, Object> fromEnv = new TreeMap<>();
    for (Map.Entry<String, String> e : env.entrySet()) {
      String name = e.getKey();
      if (name.startsWith("KVTIER_") && !KvTierConfig.RESERVED_ENV.contains(name)) {
        fromEnv.put(name.substring("KVTIER_".length()).toLowerCase(Locale.ROOT), e.getValue());
      }
    }
    apply(fromEnv, "environment (KVTIER_<KEY>)", values, sources, unsupported);

    if (overrides != null) {
      apply(overrides, "kv_connector_extra_config", values, sources, unsupported);
    }

    @SuppressWarnings("unchecked")
    Map<String, Object> extra = (Map<String, Object>) values.get("extra_config");
    for (String k : extra.keySet()) {
      if (!KvTierConfig.EXTRA_KEYS.contains(k)) {
        unsupported.add("extra_config." + k);
      }
    }
    KvTierConfig config = new KvTierConfig(values, sources, unsupported.stream().toList());
    validate(config);
    return config;
  }

  private static void apply(
      Map<String, ?> raw,
      String source,
      Map<String, Object> values,
      Map<String, String> sources,
      Set<String> unsupported) {
    for (Map.Entry<String, ?> e : raw.entrySet()) {
      String name = e.getKey();
      ConfigKey<?> key = BY_NAME.get(name);
      if (key == null) {
        if (KvTierConfig.LMCACHE_UNSUPPORTED.contains(name)) {
          unsupported.add(name);
          continue;
        }
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
      Object v = e.getValue();
      try {
        values.put(name, v == null ? key.defaultValue() : key.parse(v));
      } catch (ConfigException ex) {
        throw new ConfigException(ex.getMessage() + " (from " + source + ")");
      }
      sources.put(name, source);
    }
  }

  private static void validate(KvTierConfig c) {
    c.gpuSaveMode();
    c.gpuLoadMode();
    c.useODirect();
    if (c.maxLocalCpuBytes() == 0) {
      throw new ConfigException(
          c.localCpu()
              ? "max_local_cpu_size=0 with local_cpu=true; set a size in GB > 0"
              : "max_local_cpu_size=0 with local_cpu=false; the CPU tier still stages chunks on"
                  + " their way to the lower tiers: set a size in GB > 0");
    }
    if (!c.localDiskPaths().isEmpty() && c.maxLocalDiskBytes() == 0) {
      throw new ConfigException(
          "local_disk="
              + c.get(KvTierConfig.LOCAL_DISK)
              + " needs max_local_disk_size > 0 (GB); it is 0");
    }
  }

  /**
   * The known key (supported or recognised) closest to {@code name}: the shortest key containing it
   * if there is one (a truncated name), else the one at the smallest edit distance.
   */
  static String closest(String name) {
    String best = null;
    int bestDistance = Integer.MAX_VALUE;
    Set<String> candidates = new TreeSet<>(BY_NAME.keySet());
    candidates.addAll(KvTierConfig.LMCACHE_UNSUPPORTED);
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
