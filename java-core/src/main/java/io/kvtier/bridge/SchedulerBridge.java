package io.kvtier.bridge;

import io.kvtier.config.KvTierConfig;
import java.util.Map;

/**
 * What the Python scheduler role calls: its settings. The scheduler side keys prompts and talks to
 * the workers' lookup servers in Python, so the configuration is all it needs from the core.
 *
 * <p>Why a JVM for settings alone: the configuration is the YAML file, then {@code KVTIER_*}
 * variables, then vLLM's {@code kv_connector_extra_config}, validated (unknown keys name the
 * closest known one) and with secrets redacted in messages; that logic lives once, in {@link
 * KvTierConfig}, and a Python copy of it would drift. The JVM is not an extra cost where it matters
 * most: with vLLM's in-process executor the worker side starts the same JVM in the same process.
 *
 * <p>A facade only: it delegates. Stateless and thread-safe.
 */
public final class SchedulerBridge {
  private SchedulerBridge() {}

  /**
   * Loads this process's configuration ({@link KvTierConfig#load}: the YAML file, {@code KVTIER_*}
   * variables, then {@code settings}). Reads the file; does not touch the network.
   *
   * @throws io.kvtier.config.ConfigException on an unknown key or a malformed value (the message
   *     names the key, the value and what is allowed)
   */
  public static KvTierConfig loadConfig(Map<String, ?> settings) {
    return KvTierConfig.load(settings);
  }
}
