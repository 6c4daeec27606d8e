package io.kvtier.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;

/**
 * LMCache's published example configurations ({@code lmcache/examples}, kept as LMCache publishes
 * them), each named by {@code LMCACHE_CONFIG_FILE} as an LMCache user has it: what kvtier makes of
 * each, and the lines it logs at start-up about what it does not do.
 */
class LmCacheExamplesTest {
  private static KvTierConfig load(String example) {
    return new ConfigLoader(Map.of("LMCACHE_CONFIG_FILE", path(example).toString())).load(Map.of());
  }

  private static Path path(String example) {
    try {
      return Path.of(LmCacheExamplesTest.class.getResource("/lmcache/examples/" + example).toURI());
    } catch (URISyntaxException e) {
      throw new IllegalStateException(e);
    }
  }

  /** The notices by key, each as its level. */
  private static Map<String, LmCacheKeys.Level> levels(KvTierConfig c) {
    Map<String, LmCacheKeys.Level> out = new TreeMap<>();
    c.notices().forEach(n -> out.put(n.key(), n.level()));
    return out;
  }

  private static final LmCacheKeys.Level INFO = LmCacheKeys.Level.INFO;
  private static final LmCacheKeys.Level WARNING = LmCacheKeys.Level.WARNING;

  @Test
  void localCpu_isKvtiersCpuTier_withNothingToSay() {
    KvTierConfig c = load("cpu.yaml");
    assertTrue(c.localCpu());
    assertEquals(5L << 30, c.maxLocalCpuBytes());
    assertEquals(
        "file " + path("cpu.yaml") + " (LMCACHE_CONFIG_FILE)",
        c.sourceOf(KvTierConfig.MAX_LOCAL_CPU_SIZE));
    assertEquals(List.of(), c.notices());
    assertTrue(c.describe().contains("max_local_cpu_size         = 5.000 GB  (file "));
  }

  @Test
  void cpuAndLocalDisk_areKvtiersCpuAndDiskTiers() {
    KvTierConfig c = load("cpu-disk.yaml");
    assertEquals(List.of(Path.of("/tmp/lmcache/local_disk/")), c.localDiskPaths());
    assertEquals(20L << 30, c.maxLocalDiskBytes());
    assertEquals(List.of(), c.notices());
  }

  @Test
  void theOlderDiskForm_loads_sayingWhatToSetForADiskTier() {
    KvTierConfig c = load("disk.yaml");
    assertEquals(List.of(), c.localDiskPaths(), "LMCache 0.5.6 makes no disk tier of it either");
    assertEquals(Map.of("local_device", INFO), levels(c));
    assertTrue(c.notices().get(0).text().contains("local_disk"), c.notices().toString());
  }

  @Test
  void redisRemote_isKvtiersRedisTier_storingRawBytesWhereCachegenWasAsked() {
    KvTierConfig c = load("redis.yaml");
    assertEquals("redis://localhost:65432", c.remoteUrl());
    assertEquals(
        Map.of("local_device", INFO, "pipelined_backend", INFO, "remote_serde", WARNING),
        levels(c));
    String described = c.describe();
    assertTrue(
        described.contains(
            "WARNING: LMCache's remote_serde=cachegen (from file "
                + path("redis.yaml")
                + " (LMCACHE_CONFIG_FILE)): kvtier stores chunks in the remote store as raw KV"
                + " bytes, not cachegen-compressed"),
        described);
  }

  @Test
  void lmcacheServerRemote_isRefused_namingKvtiersServer() {
    ConfigException e = assertThrows(ConfigException.class, () -> load("lmcache-server.yaml"));
    assertTrue(e.getMessage().startsWith("remote_url=lm://localhost:65432"), e.getMessage());
    assertTrue(e.getMessage().contains("kvtier-server --port N"), e.getMessage());
    assertTrue(e.getMessage().contains("LMCACHE_CONFIG_FILE"), e.getMessage());
  }

  @Test
  void layerwise_isHonoured_andBlendingWarned() {
    KvTierConfig c = load("layerwise.yaml");
    assertTrue(c.useLayerwise());
    assertEquals(Map.of("enable_blending", WARNING, "blend_special_str", INFO), levels(c));
  }

  @Test
  void p2p_loadsAsALocalCpuTier_warningOfP2pAndTheController() {
    KvTierConfig c = load("p2p.yaml");
    assertEquals(5L << 30, c.maxLocalCpuBytes());
    assertNull(c.remoteUrl());
    Map<String, LmCacheKeys.Level> levels = levels(c);
    assertEquals(WARNING, levels.remove("enable_p2p"));
    assertEquals(WARNING, levels.remove("enable_controller"));
    assertTrue(levels.values().stream().allMatch(INFO::equals), levels.toString());
    assertEquals(
        List.of(
            "controller_pull_url",
            "controller_reply_url",
            "enable_async_loading",
            "extra_config.lookup_backoff_time",
            "lmcache_instance_id",
            "lmcache_worker_ports",
            "p2p_host",
            "p2p_init_ports",
            "p2p_lookup_ports",
            "transfer_channel"),
        List.copyOf(levels.keySet()));
  }

  @Test
  void disaggregatedPrefill_isRefused_sayingWhatToRunInstead() {
    for (String example : List.of("pd-prefiller.yaml", "pd-decoder.yaml")) {
      ConfigException e = assertThrows(ConfigException.class, () -> load(example));
      assertTrue(
          e.getMessage().startsWith("local_cpu=false leaves no tier to keep chunks in"),
          e.getMessage());
      assertTrue(
          e.getMessage().contains("LMCache's disaggregated prefill, which kvtier does not have"),
          e.getMessage());
      assertTrue(e.getMessage().contains("NixlConnector"), e.getMessage());
    }
  }
}
