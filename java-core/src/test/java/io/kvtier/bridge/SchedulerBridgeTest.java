package io.kvtier.bridge;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.ConfigException;
import java.util.Map;
import org.junit.jupiter.api.Test;

class SchedulerBridgeTest {
  @Test
  void loadConfig_settingsOverrideDefaults() {
    var config = SchedulerBridge.loadConfig(Map.of("chunk_size", 64L, "save_unfull_chunk", true));
    assertEquals(64, config.chunkTokens());
    assertTrue(config.saveUnfullChunk());
  }

  @Test
  void loadConfig_unknownKey_isAConfigException() {
    var e =
        assertThrows(
            ConfigException.class, () -> SchedulerBridge.loadConfig(Map.of("chunk_sise", 64L)));
    assertTrue(e.getMessage().contains("chunk_sise"), e.getMessage());
  }
}
