package io.kvtier.config;

import java.util.Arrays;
import java.util.Locale;

/** How the CPU tier picks what to evict when it is full ({@code cache_policy}). */
public enum CachePolicy {
  /** Caffeine's W-TinyLFU: admission by frequency sketch, recency window. The default. */
  TINYLFU,
  /** Least recently used first. */
  LRU,
  /** First stored, first evicted. */
  FIFO;

  /**
   * Parses a policy name, case-insensitively; {@code W-TINYLFU} is accepted for TINYLFU.
   *
   * @throws ConfigException naming the value and the allowed policies
   */
  static CachePolicy parse(String key, String value) {
    String v = value.trim().toUpperCase(Locale.ROOT).replace("W-", "").replace("_", "");
    for (CachePolicy p : values()) {
      if (p.name().equals(v)) {
        return p;
      }
    }
    throw new ConfigException(
        key
            + "="
            + value
            + " is not a supported cache policy; allowed: "
            + Arrays.toString(values())
            + (v.equals("MRU")
                ? " (LMCache's MRU is not offered: kvtier's policies keep recently used chunks)"
                : ""));
  }
}
