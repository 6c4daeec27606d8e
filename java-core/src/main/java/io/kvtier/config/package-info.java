/**
 * Configuration: {@link io.kvtier.config.KvTierConfig} (immutable, typed), its {@link
 * io.kvtier.config.ConfigKey}s with defaults and units, and the loader that layers a YAML file,
 * {@code KVTIER_<KEY>} environment variables and per-instance overrides. Malformed values and
 * unknown keys fail with a {@link io.kvtier.config.ConfigException} naming the key, the value and
 * what is allowed.
 */
package io.kvtier.config;
