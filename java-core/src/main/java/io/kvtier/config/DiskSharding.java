package io.kvtier.config;

import java.util.Arrays;
import java.util.Locale;

/**
 * How chunks are spread over several {@code local_disk} paths ({@code local_disk_path_sharding}).
 */
public enum DiskSharding {
  /** Each GPU (TP rank) uses one path, chosen by rank; one NVMe per GPU. The default. */
  BY_GPU,
  /** One process spreads its chunks over all paths, by chunk hash. */
  STRIPED;

  /** The name as written in configuration, e.g. {@code by_gpu}. */
  public String configName() {
    return name().toLowerCase(Locale.ROOT);
  }

  static DiskSharding parse(String key, String value) {
    String v = value.trim().toUpperCase(Locale.ROOT).replace('-', '_');
    for (DiskSharding s : values()) {
      if (s.name().equals(v)) {
        return s;
      }
    }
    throw new ConfigException(
        key
            + "="
            + value
            + " is not a sharding mode; allowed: "
            + Arrays.stream(values()).map(DiskSharding::configName).toList());
  }
}
