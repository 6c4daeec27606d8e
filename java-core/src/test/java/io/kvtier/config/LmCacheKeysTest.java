package io.kvtier.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every key of LMCache 0.5.6's configuration ({@code lmcache/lmcache-0.5.6-keys.tsv}: names,
 * aliases, defaults and a typical other value each) loads in kvtier, from a map and from LMCache's
 * environment, and is honoured, mapped, or reported once by name with what the user does not get.
 */
class LmCacheKeysTest {
  /**
   * Keys whose typical value turns on a capability kvtier lacks: each must give a WARNING naming
   * it. Everything else LMCache has (tuning knobs, a capability left off) is INFO.
   */
  private static final Map<String, String> CAPABILITIES =
      Map.ofEntries(
          Map.entry("enable_p2p", "P2P"),
          Map.entry("enable_pd", "disaggregated prefill"),
          Map.entry("enable_blending", "CacheBlend"),
          Map.entry("gds_path", "GPUDirect Storage"),
          Map.entry("maru_path", "Maru"),
          Map.entry("enable_hidden_state_cache", "hidden-state cache"),
          Map.entry("enable_controller", "controller"),
          Map.entry("internal_api_server_enabled", "internal API server"),
          Map.entry("enable_chunk_statistics", "chunk statistics"),
          Map.entry("remote_config_url", "remote configuration service"),
          Map.entry("runtime_plugin_locations", "runtime plugins"),
          Map.entry("storage_plugins", "storage backend plugins"),
          Map.entry("remote_storage_plugins", "remote storage plugins"),
          Map.entry("external_lookup_client", "external lookup client"),
          Map.entry("retrieve_locations", "backends loads read from"),
          Map.entry("store_location", "one backend that saves go to"),
          Map.entry("priority_limit", "priority limit"),
          Map.entry("remote_serde", "not cachegen-compressed"));

  /**
   * Keys that need another to load: kvtier refuses a disk tier without a budget, and a CPU tier
   * that only stages chunks (local_cpu: false) with no tier below it.
   */
  private static final Map<String, Map<String, Object>> COMPANIONS =
      Map.of(
          "local_disk", Map.of("max_local_disk_size", 10.0),
          "local_cpu", Map.of("remote_url", "redis://cache.internal:6379"));

  /** One row of the key list. */
  record Row(String key, List<String> aliases, Object defaultValue, Object typical) {
    boolean hasTypical() {
      return typical != NONE;
    }

    @Override
    public String toString() {
      return key;
    }
  }

  private static final Object NONE = new Object();

  static List<Row> rows() throws IOException {
    List<Row> rows = new ArrayList<>();
    try (var in = LmCacheKeysTest.class.getResourceAsStream("/lmcache/lmcache-0.5.6-keys.tsv")) {
      assertNotNull(in, "the key list is a test resource");
      String text = new String(in.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
      for (MigrationGuide.KeyRow r : MigrationGuide.parse(text)) {
        rows.add(
            new Row(
                r.key(),
                r.aliases(),
                r.defaultText().equals("-") ? NONE : YamlSource.parseFlow(r.key(), r.defaultText()),
                r.typicalText().equals("-")
                    ? NONE
                    : YamlSource.parseFlow(r.key(), r.typicalText())));
      }
    }
    return rows;
  }

  static Stream<Row> rowsWithTypical() throws IOException {
    return rows().stream().filter(Row::hasTypical);
  }

  static Stream<Row> rowsWithDefault() throws IOException {
    return rows().stream().filter(r -> r.defaultValue() != NONE);
  }

  @Test
  void theListHoldsLmCachesWholeSchema_andKvtierKnowsEveryNameInIt_andNoOther() throws IOException {
    List<Row> rows = rows();
    assertEquals(109, rows.size(), "LMCache 0.5.6's 108 keys and the deprecated nixl_peer_port");
    Set<String> listed = new TreeSet<>();
    Map<String, String> aliases = new HashMap<>();
    for (Row r : rows) {
      listed.add(r.key());
      for (String a : r.aliases()) {
        listed.add(a);
        aliases.put(a, r.key());
      }
    }
    assertEquals(listed, LmCacheKeys.names());
    assertEquals(aliases, LmCacheKeys.ALIASES);
    for (Row r : rows) {
      if (!aliases.containsKey(r.key())) {
        assertEquals(r.key(), LmCacheKeys.of(r.key()).key());
      }
    }
  }

  @ParameterizedTest
  @MethodSource("rowsWithDefault")
  void everyKey_loadsWithLmCachesDefault_andNeverWarnsForIt(Row row) {
    KvTierConfig c = loaded(row.key(), row.defaultValue());
    LmCacheKeys.Treatment t = LmCacheKeys.of(row.key());
    if (t.kind() == LmCacheKeys.Kind.IGNORED) {
      LmCacheKeys.Notice n = onlyNotice(c, t.key());
      assertEquals(LmCacheKeys.Level.INFO, n.level(), "a default takes nothing away: " + n);
      assertTrue(n.text().contains("LMCache's " + row.key() + "="), n.text());
    } else {
      assertTrue(
          c.notices().stream().noneMatch(n -> n.level() == LmCacheKeys.Level.WARNING),
          c.notices().toString());
    }
  }

  @ParameterizedTest
  @MethodSource("rowsWithTypical")
  void everyKey_loadsWithATypicalValue_honouredMappedOrReportedOnceByName(Row row) {
    checkTypical(row.key(), row.typical(), loaded(row.key(), row.typical()), "kv_connector");
    for (String alias : row.aliases()) {
      checkTypical(alias, row.typical(), loaded(alias, row.typical()), "kv_connector");
    }
  }

  @ParameterizedTest
  @MethodSource("rowsWithTypical")
  void everyKey_loadsFromLmCachesEnvironment_asLmCacheWritesIt(Row row) {
    for (String name : names(row)) {
      String variable = "LMCACHE_" + name.toUpperCase(Locale.ROOT);
      Map<String, String> env = new HashMap<>(Map.of(variable, envText(row.typical())));
      COMPANIONS
          .getOrDefault(row.key(), Map.of())
          .forEach((k, v) -> env.put("LMCACHE_" + k.toUpperCase(Locale.ROOT), envText(v)));
      KvTierConfig c = new ConfigLoader(env).load(Map.of());
      checkTypical(name, row.typical(), c, "env " + variable);
    }
  }

  private static void checkTypical(String name, Object value, KvTierConfig c, String source) {
    LmCacheKeys.Treatment t = LmCacheKeys.of(name);
    switch (t.kind()) {
      case HONOURED, MAPPED -> {
        ConfigKey<?> key = ConfigLoader.key(t.target());
        assertTrue(c.sourceOf(key).startsWith(source), c.sourceOf(key));
        assertEquals(key.parse(LmCacheKeys.convert(name, value)), c.get(key));
        assertTrue(c.unsupportedKeys().isEmpty(), c.unsupportedKeys().toString());
        if (t.kind() == LmCacheKeys.Kind.MAPPED) {
          assertTrue(onlyNotice(c, t.target()).text().contains("is kvtier's " + t.target()));
        }
      }
      case IGNORED -> {
        LmCacheKeys.Notice n = onlyNotice(c, t.key());
        assertEquals(List.of(t.key()), c.unsupportedKeys());
        assertTrue(n.text().startsWith("LMCache's " + name + "="), n.text());
        assertTrue(n.text().contains("(from " + source), n.text());
        String capability = CAPABILITIES.get(t.key());
        assertEquals(
            capability != null ? LmCacheKeys.Level.WARNING : LmCacheKeys.Level.INFO,
            n.level(),
            n.text());
        if (capability != null) {
          assertTrue(n.text().contains(capability), n.text() + " names " + capability);
        }
        if (!name.equals(t.key())) {
          assertTrue(n.text().contains("older name for " + t.key()), n.text());
        }
      }
    }
  }

  @Test
  void honouredValues_meanWhatTheyMeanInLmCache() {
    KvTierConfig c =
        KvTierConfig.of(
            Map.of(
                "local_disk",
                "file:///mnt/nvme0/lmcache/,file:///mnt/nvme1/lmcache/",
                "max_local_disk_size",
                100.0,
                "max_local_cpu_size",
                20.0,
                "cache_policy",
                "LFU",
                "blocking_timeout_secs",
                30));
    assertEquals(
        List.of(Path.of("/mnt/nvme0/lmcache/"), Path.of("/mnt/nvme1/lmcache/")),
        c.localDiskPaths());
    assertEquals(100L << 30, c.maxLocalDiskBytes());
    assertEquals(20L << 30, c.maxLocalCpuBytes());
    assertEquals(CachePolicy.TINYLFU, c.cachePolicy());
    assertTrue(onlyNotice(c, "cache_policy").text().contains("TINYLFU"));
    assertEquals(30_000, c.remoteTimeoutMs());
    assertEquals(
        "LMCache's blocking_timeout_secs=30 (from kv_connector_extra_config) is kvtier's"
            + " remote_timeout_ms=30000",
        onlyNotice(c, "remote_timeout_ms").text());
    ConfigException mru =
        assertThrows(ConfigException.class, () -> KvTierConfig.of(Map.of("cache_policy", "MRU")));
    assertTrue(mru.getMessage().contains("MRU"), mru.getMessage());
  }

  @Test
  void remoteSerde_saysWhatKvtierStores_andRefusesWhatLmCacheRefuses() {
    LmCacheKeys.Notice naive =
        onlyNotice(KvTierConfig.of(Map.of("remote_serde", "naive")), "remote_serde");
    assertEquals(LmCacheKeys.Level.INFO, naive.level());
    assertTrue(naive.text().contains("raw KV bytes, as naive does"), naive.text());
    LmCacheKeys.Notice kivi =
        onlyNotice(KvTierConfig.of(Map.of("remote_serde", "kivi")), "remote_serde");
    assertEquals(LmCacheKeys.Level.WARNING, kivi.level());
    Map<String, Object> unset = new HashMap<>();
    unset.put("remote_serde", null); // LMCache's examples write NULL
    assertEquals(
        LmCacheKeys.Level.INFO, onlyNotice(KvTierConfig.of(unset), "remote_serde").level());
    ConfigException e =
        assertThrows(
            ConfigException.class, () -> KvTierConfig.of(Map.of("remote_serde", "protobuf")));
    assertEquals(
        "remote_serde=protobuf (from kv_connector_extra_config) is not one of LMCache's serdes "
            + LmCacheKeys.REMOTE_SERDES,
        e.getMessage());
  }

  @Test
  void precedence_extraConfig_kvtierEnv_lmcacheEnv_file_defaults_withEachSourceNamed(
      @TempDir Path dir) throws IOException {
    Path file = dir.resolve("lmcache.yaml");
    Files.writeString(
        file,
        "chunk_size: 64\nmax_local_cpu_size: 2.0\nsave_unfull_chunk: true\nuse_layerwise: true\n"
            + "enable_p2p: true\n");
    Map<String, String> env = new HashMap<>();
    env.put("LMCACHE_CONFIG_FILE", file.toString());
    env.put("LMCACHE_CHUNK_SIZE", "128");
    env.put("LMCACHE_MAX_LOCAL_CPU_SIZE", "3.0");
    env.put("LMCACHE_SAVE_UNFULL_CHUNK", "\"false\"");
    env.put("LMCACHE_ENABLE_P2P", "False");
    env.put("LMCACHE_LOG_LEVEL", "DEBUG"); // not a configuration key: LMCache's own logging
    env.put("KVTIER_CHUNK_SIZE", "32");
    KvTierConfig c = new ConfigLoader(env).load(Map.of("lmcache.chunk_size", 16));
    assertEquals(16, c.chunkTokens());
    assertEquals("kv_connector_extra_config", c.sourceOf(KvTierConfig.CHUNK_SIZE));
    assertEquals(3L << 30, c.maxLocalCpuBytes());
    assertEquals("env LMCACHE_MAX_LOCAL_CPU_SIZE", c.sourceOf(KvTierConfig.MAX_LOCAL_CPU_SIZE));
    assertFalse(c.saveUnfullChunk(), "LMCache's quotes are taken off");
    assertTrue(c.useLayerwise());
    assertEquals("file " + file + " (LMCACHE_CONFIG_FILE)", c.sourceOf(KvTierConfig.USE_LAYERWISE));
    assertEquals("default", c.sourceOf(KvTierConfig.REMOTE_URL));
    LmCacheKeys.Notice p2p = onlyNotice(c, "enable_p2p");
    assertEquals(LmCacheKeys.Level.INFO, p2p.level(), "the environment turned it off again");
    assertTrue(p2p.text().contains("(from env LMCACHE_ENABLE_P2P)"), p2p.text());
    String described = c.describe();
    assertTrue(described.contains("chunk_size                 = 16  (kv_connector_extra_config)"));
    assertTrue(described.contains("(env LMCACHE_MAX_LOCAL_CPU_SIZE)"), described);
    assertTrue(described.contains("INFO: LMCache's enable_p2p=False"), described);

    env.remove("KVTIER_CHUNK_SIZE");
    assertEquals(128, new ConfigLoader(env).load(Map.of()).chunkTokens());
    env.remove("LMCACHE_CHUNK_SIZE");
    assertEquals(64, new ConfigLoader(env).load(Map.of()).chunkTokens());
  }

  @Test
  void bothConfigurationFiles_isAnErrorNamingBoth(@TempDir Path dir) throws IOException {
    Path a = Files.writeString(dir.resolve("kvtier.yaml"), "chunk_size: 64\n");
    Path b = Files.writeString(dir.resolve("lmcache.yaml"), "chunk_size: 128\n");
    ConfigException e =
        assertThrows(
            ConfigException.class,
            () ->
                new ConfigLoader(
                        Map.of(
                            "KVTIER_CONFIG_FILE",
                            a.toString(),
                            "LMCACHE_CONFIG_FILE",
                            b.toString()))
                    .load(Map.of()));
    assertEquals(
        "both KVTIER_CONFIG_FILE="
            + a
            + " and LMCACHE_CONFIG_FILE="
            + b
            + " are set; kvtier reads one configuration file: unset one of them",
        e.getMessage());
    ConfigException missing =
        assertThrows(
            ConfigException.class,
            () ->
                new ConfigLoader(Map.of("LMCACHE_CONFIG_FILE", dir.resolve("no.yaml").toString()))
                    .load(Map.of()));
    assertTrue(missing.getMessage().startsWith("LMCACHE_CONFIG_FILE="), missing.getMessage());
  }

  @Test
  void oneMeaningUnderTwoNames_inOneSource_isAnError() {
    ConfigException prefixed =
        assertThrows(
            ConfigException.class,
            () -> KvTierConfig.of(orderedMap("chunk_size", 64, "lmcache.chunk_size", 128)));
    assertEquals(
        "kv_connector_extra_config sets both 'chunk_size' and 'lmcache.chunk_size'; keep one",
        prefixed.getMessage());
    ConfigException mapped =
        assertThrows(
            ConfigException.class,
            () ->
                KvTierConfig.of(orderedMap("remote_timeout_ms", 500, "blocking_timeout_secs", 10)));
    assertTrue(
        mapped.getMessage().startsWith("both 'remote_timeout_ms' and 'blocking_timeout_secs'"),
        mapped.getMessage());
    ConfigException alias =
        assertThrows(
            ConfigException.class,
            () -> KvTierConfig.of(orderedMap("enable_pd", true, "enable_xpyd", true)));
    assertTrue(alias.getMessage().contains("they mean the same"), alias.getMessage());
  }

  @Test
  void aSecretInAnIgnoredValue_isNeverShown() {
    KvTierConfig c =
        KvTierConfig.of(Map.of("audit_actual_remote_url", "redis://user:hunter2@cache:6379"));
    String line = onlyNotice(c, "audit_actual_remote_url").text();
    assertFalse(line.contains("hunter2"), line);
    assertFalse(c.describe().contains("hunter2"));
  }

  // ---- helpers

  private static KvTierConfig loaded(String name, Object value) {
    Map<String, Object> settings = new LinkedHashMap<>();
    settings.put(name, value);
    settings.putAll(COMPANIONS.getOrDefault(LmCacheKeys.of(name).key(), Map.of()));
    return KvTierConfig.of(settings);
  }

  private static LmCacheKeys.Notice onlyNotice(KvTierConfig c, String key) {
    List<LmCacheKeys.Notice> about =
        c.notices().stream().filter(n -> n.key().equals(key)).collect(Collectors.toList());
    assertEquals(1, about.size(), "one line about " + key + ": " + c.notices());
    return about.get(0);
  }

  private static List<String> names(Row row) {
    List<String> names = new ArrayList<>(List.of(row.key()));
    names.addAll(row.aliases());
    return names;
  }

  /** A value as LMCache's environment holds it: lists comma-separated, mappings as JSON. */
  private static String envText(Object value) {
    if (value instanceof Collection<?> c) {
      return c.stream().map(String::valueOf).collect(Collectors.joining(","));
    }
    if (value instanceof Map<?, ?> m) {
      return m.entrySet().stream()
          .map(e -> "\"" + e.getKey() + "\": " + e.getValue())
          .collect(Collectors.joining(", ", "{", "}"));
    }
    return String.valueOf(value);
  }

  private static Map<String, Object> orderedMap(String k1, Object v1, String k2, Object v2) {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put(k1, v1);
    m.put(k2, v2);
    return m;
  }

  @Test
  void capabilitiesNamedHere_areKeysOfTheList() throws IOException {
    Set<String> keys = rows().stream().map(Row::key).collect(Collectors.toSet());
    for (String k : CAPABILITIES.keySet()) {
      assertTrue(keys.contains(k), k);
      assertNotEquals(LmCacheKeys.Kind.HONOURED, LmCacheKeys.of(k).kind());
    }
  }
}
