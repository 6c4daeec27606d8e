package io.kvtier.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class ConfigTest {
  @TempDir Path dir;

  private Map<String, String> envWithFile(String yaml) throws IOException {
    Path f = dir.resolve("kvtier.yaml");
    Files.writeString(f, yaml);
    return Map.of("KVTIER_CONFIG_FILE", f.toString());
  }

  private static KvTierConfig load(Map<String, String> env, Map<String, ?> overrides) {
    return new ConfigLoader(env).load(overrides);
  }

  @Test
  void defaults_matchDocumentation() {
    KvTierConfig c = KvTierConfig.defaults();
    assertEquals(256, c.chunkTokens());
    assertTrue(c.localCpu());
    assertEquals(5L << 30, c.maxLocalCpuBytes());
    assertEquals(List.of(), c.localDiskPaths());
    assertEquals(DiskSharding.BY_GPU, c.localDiskPathSharding());
    assertEquals(CachePolicy.TINYLFU, c.cachePolicy());
    assertFalse(c.saveUnfullChunk());
    assertFalse(c.useLayerwise());
    assertFalse(c.useODirect());
    assertEquals("default", c.sourceOf(KvTierConfig.CHUNK_SIZE));
  }

  @Test
  void docs_listEveryKeyWithItsDefault() throws IOException {
    String doc = Files.readString(Path.of("..", "docs", "configuration.md"));
    for (ConfigKey<?> key : KvTierConfig.KEYS) {
      assertTrue(doc.contains("`" + key.name() + "`"), key.name() + " is not documented");
    }
  }

  @Test
  void lmcacheYaml_loadsUnchanged_andReportsWhatIsUnsupported() throws IOException {
    String yaml =
        """
        chunk_size: 256
        local_cpu: True
        max_local_cpu_size: 2.5
        local_disk: "file:///tmp/lmcache/"
        max_local_disk_size: 20
        remote_url: null
        save_unfull_chunk: false
        cache_policy: LRU
        enable_blending: False
        remote_serde: "naive"
        extra_config:
          use_odirect: true
          save_chunk_meta: false
        """;
    KvTierConfig c = load(envWithFile(yaml), Map.of());
    assertEquals((long) (2.5 * (1L << 30)), c.maxLocalCpuBytes());
    assertEquals(List.of(Path.of("/tmp/lmcache/")), c.localDiskPaths());
    assertEquals(20L << 30, c.maxLocalDiskBytes());
    assertEquals(CachePolicy.LRU, c.cachePolicy());
    assertTrue(c.useODirect());
    assertEquals(
        List.of("enable_blending", "extra_config.save_chunk_meta", "remote_serde"),
        c.unsupportedKeys());
    assertTrue(c.sourceOf(KvTierConfig.CHUNK_SIZE).startsWith("file "));
    assertTrue(
        c.describe().contains("INFO: LMCache's enable_blending=false (from file "), c.describe());
  }

  @Test
  void layers_envOverridesFile_andOverridesWinOverEnv() throws IOException {
    Map<String, String> env = new java.util.HashMap<>(envWithFile("chunk_size: 128\n"));
    env.put("KVTIER_CHUNK_SIZE", "64");
    env.put("KVTIER_SAVE_UNFULL_CHUNK", "yes");
    env.put("KVTIER_EXTRA_CONFIG", "{\"use_odirect\": true}");
    env.put("KVTIER_JVM_HEAP", "2g"); // not a configuration key, ignored here
    env.put("KVTIER_VLLM_DTYPE", "float32"); // the examples' and benchmarks' own knobs, too
    env.put("KVTIER_VLLM_THREADS", "2");
    KvTierConfig c = load(env, Map.of("chunk_size", "32"));
    assertEquals(32, c.chunkTokens());
    assertEquals("kv_connector_extra_config", c.sourceOf(KvTierConfig.CHUNK_SIZE));
    assertTrue(c.saveUnfullChunk());
    assertTrue(c.useODirect());
    assertEquals(64, load(env, Map.of()).chunkTokens());
  }

  @Test
  void gpuCopyModes_defaultToMapped_andBadValuesFailAtLoad() throws IOException {
    KvTierConfig c = load(Map.of(), Map.of());
    assertEquals("mapped", c.gpuSaveMode());
    assertEquals("mapped", c.gpuLoadMode());
    KvTierConfig dma =
        load(
            Map.of(),
            Map.of("extra_config", Map.of("gpu_save_mode", "DMA", "gpu_load_mode", "dma")));
    assertEquals("dma", dma.gpuSaveMode());
    assertEquals("dma", dma.gpuLoadMode());
    assertTrue(dma.unsupportedKeys().isEmpty());
    ConfigException e =
        assertThrows(
            ConfigException.class,
            () -> load(Map.of(), Map.of("extra_config", Map.of("gpu_load_mode", "zero-copy"))));
    assertEquals(
        "extra_config.gpu_load_mode=zero-copy is not allowed; expected mapped or dma",
        e.getMessage());
  }

  @Test
  void unknownKey_failsNamingClosest() throws IOException {
    ConfigException e =
        assertThrows(ConfigException.class, () -> load(envWithFile("chunk_sise: 256\n"), Map.of()));
    assertTrue(e.getMessage().startsWith("unknown configuration key 'chunk_sise'"), e.getMessage());
    assertTrue(e.getMessage().contains("did you mean 'chunk_size'?"), e.getMessage());
  }

  @Test
  void unknownEnvKey_failsNamingClosest() {
    ConfigException e =
        assertThrows(
            ConfigException.class, () -> load(Map.of("KVTIER_MAX_LOCAL_CPU", "4"), Map.of()));
    assertTrue(e.getMessage().contains("'max_local_cpu'"), e.getMessage());
    assertTrue(e.getMessage().contains("did you mean 'max_local_cpu_size'?"), e.getMessage());
  }

  @Test
  void negativeSize_failsNamingKeyValueAndSource() {
    ConfigException e =
        assertThrows(
            ConfigException.class, () -> load(Map.of(), Map.of("max_local_cpu_size", "-1")));
    assertEquals(
        "max_local_cpu_size=-1 is not allowed; a size in GB must be >= 0 (from"
            + " kv_connector_extra_config)",
        e.getMessage());
  }

  @Test
  void unknownPolicy_failsListingAllowed() {
    ConfigException e =
        assertThrows(ConfigException.class, () -> load(Map.of(), Map.of("cache_policy", "MRU")));
    assertTrue(e.getMessage().contains("cache_policy=MRU"), e.getMessage());
    assertTrue(e.getMessage().contains("[TINYLFU, LRU, FIFO]"), e.getMessage());
  }

  @Test
  void malformedValues_failClearly() {
    assertThrows(ConfigException.class, () -> load(Map.of(), Map.of("chunk_size", "0")));
    assertThrows(ConfigException.class, () -> load(Map.of(), Map.of("chunk_size", "lots")));
    assertThrows(ConfigException.class, () -> load(Map.of(), Map.of("local_cpu", "maybe")));
    assertThrows(
        ConfigException.class, () -> load(Map.of(), Map.of("local_disk_path_sharding", "rr")));
    assertThrows(ConfigException.class, () -> load(Map.of(), Map.of("local_disk", "/a,,/b")));
    assertThrows(ConfigException.class, () -> load(Map.of(), Map.of("extra_config", "[1, 2]")));
  }

  @Test
  void inconsistentSettings_failAtLoad() {
    ConfigException e =
        assertThrows(ConfigException.class, () -> load(Map.of(), Map.of("local_disk", "/tmp/kv")));
    assertTrue(e.getMessage().contains("needs max_local_disk_size > 0"), e.getMessage());
    assertThrows(ConfigException.class, () -> load(Map.of(), Map.of("max_local_cpu_size", "0")));
  }

  @Test
  void unparsableYaml_failsNamingFile() throws IOException {
    ConfigException e =
        assertThrows(
            ConfigException.class, () -> load(envWithFile("chunk_size: [256\n"), Map.of()));
    assertTrue(e.getMessage().contains("is not valid YAML"), e.getMessage());
    assertThrows(ConfigException.class, () -> load(envWithFile("- a\n- b\n"), Map.of()));
    assertThrows(
        ConfigException.class,
        () -> load(envWithFile("chunk_size: 1\nchunk_size: 2\n"), Map.of()),
        "duplicate keys are refused");
  }

  @Test
  void missingConfigFile_fails() {
    ConfigException e =
        assertThrows(
            ConfigException.class,
            () ->
                load(Map.of("KVTIER_CONFIG_FILE", dir.resolve("nope.yaml").toString()), Map.of()));
    assertTrue(e.getMessage().contains("does not exist"));
  }

  @Test
  void editDistance_isLevenshtein() {
    assertEquals(0, ConfigLoader.editDistance("abc", "abc"));
    assertEquals(1, ConfigLoader.editDistance("chunk_sise", "chunk_size"));
    assertEquals(3, ConfigLoader.editDistance("kitten", "sitting"));
  }

  @Test
  void maxLocalCpuSizeZero_withLocalCpuFalse_failsNamingTheKey() {
    ConfigException e =
        assertThrows(
            ConfigException.class,
            () ->
                load(
                    Map.of(),
                    Map.of(
                        "local_cpu",
                        false,
                        "max_local_cpu_size",
                        0,
                        "local_disk",
                        "/tmp/kv",
                        "max_local_disk_size",
                        1)));
    assertTrue(
        e.getMessage().startsWith("max_local_cpu_size=0 with local_cpu=false"), e.getMessage());
  }

  @Test
  void localCpuOff_withNoTierBelow_isRefusedAtLoad() {
    ConfigException e =
        assertThrows(ConfigException.class, () -> load(Map.of(), Map.of("local_cpu", false)));
    assertEquals(
        "local_cpu=false leaves no tier to keep chunks in: set local_disk or remote_url (or"
            + " local_cpu=true)",
        e.getMessage());
    assertFalse(load(Map.of(), Map.of("local_cpu", false, "remote_url", "redis://r")).localCpu());
  }

  // ---- secrets --------------------------------------------------------------------------------

  @ParameterizedTest
  @ValueSource(
      strings = {
        "redis://user:hunter2@127.0.0.1:6399",
        "redis://hunter2@127.0.0.1:6399",
        "rediss://user:hunter2@127.0.0.1:6399",
        "redis-sentinel://:hunter2@127.0.0.1:26379/0#mymaster",
        "redis-cluster://:hunter2@127.0.0.1:7000,127.0.0.1:7001",
        "kvtier://:hunter2@127.0.0.1:7070"
      })
  void describe_remoteUrlWithPassword_showsItMasked(String url) {
    KvTierConfig c = KvTierConfig.of(Map.of("remote_url", url));
    String masked = Redaction.url(url);
    assertTrue(masked.contains(":***@") || masked.contains("//***@"), masked);
    for (String shown : new String[] {c.describe(), c.toString()}) {
      assertFalse(shown.contains("hunter2"), shown);
      assertTrue(shown.contains(masked), shown);
    }
    assertEquals(url, c.remoteUrl(), "the value itself is kept for connecting");
  }

  @Test
  void describe_extraConfigEntryWithSecretName_isMasked() {
    KvTierConfig c =
        KvTierConfig.of(
            Map.of("extra_config", Map.of("use_odirect", false, "remote_auth_token", "t0k3n")));
    assertFalse(c.describe().contains("t0k3n"), c.describe());
    assertTrue(c.describe().contains("remote_auth_token=***"), c.describe());
    assertEquals(List.of("extra_config.remote_auth_token"), c.unsupportedKeys());
  }

  @ParameterizedTest
  @ValueSource(
      strings = {
        "lm://localhost:65432|kvtier-server",
        "valkey://:hunter2@h:6379|redis://host:port",
        "blackhole://|leave remote_url unset",
        "fs:///mnt/shared|local_disk",
        "infinistore://h:1|kvtier://",
        "memcached://u:hunter2@h:1|expected a URL starting with redis://"
      })
  void remoteUrlOfAnotherScheme_isRefusedAtLoad_sayingWhatToUse(String urlAndAdvice) {
    String url = urlAndAdvice.split("\\|")[0];
    ConfigException e =
        assertThrows(ConfigException.class, () -> KvTierConfig.of(Map.of("remote_url", url)));
    assertTrue(e.getMessage().contains(urlAndAdvice.split("\\|")[1]), e.getMessage());
    assertTrue(e.getMessage().startsWith("remote_url="), e.getMessage());
    assertFalse(e.getMessage().contains("hunter2"), e.getMessage());
  }

  @Test
  void badRemoteUrlValue_messageMasksThePassword() {
    ConfigException e =
        assertThrows(
            ConfigException.class,
            () -> KvTierConfig.of(Map.of("remote_url", Map.of("url", "redis://u:hunter2@h:1"))));
    assertFalse(e.getMessage().contains("hunter2"), e.getMessage());
    assertTrue(e.getMessage().contains("remote_url="), e.getMessage());
  }

  @Test
  void badExtraConfigFromEnvironment_messageMasksSecrets() {
    ConfigException e =
        assertThrows(
            ConfigException.class,
            () ->
                load(Map.of("KVTIER_EXTRA_CONFIG", "{remote_password: hunter2, x: [1"), Map.of()));
    assertFalse(e.getMessage().contains("hunter2"), e.getMessage());
    assertTrue(e.getMessage().contains("extra_config="), e.getMessage());
  }

  @Test
  void invalidYaml_messageQuotingASecretLine_masksIt() throws IOException {
    ConfigException e =
        assertThrows(
            ConfigException.class,
            () ->
                load(
                    envWithFile(
                        "chunk_size: 256\nremote_url: redis://user:hunter2@h:6379 : oops\n"),
                    Map.of()));
    assertFalse(e.getMessage().contains("hunter2"), e.getMessage());
    assertTrue(e.getMessage().contains("is not valid YAML"), e.getMessage());
  }
}
