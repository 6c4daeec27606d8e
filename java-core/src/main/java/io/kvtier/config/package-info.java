/**
 * Configuration: {@link io.kvtier.config.KvTierConfig} (immutable, typed), its {@link
 * io.kvtier.config.ConfigKey}s with type, default, unit, allowed values and description, and the
 * loader that layers a YAML file, {@code KVTIER_<KEY>} environment variables and per-instance
 * overrides. Malformed values and unknown keys fail with a {@link io.kvtier.config.ConfigException}
 * naming the key, the value and what is allowed. The keys are the one source of the key table in
 * {@code docs/configuration.md}, which {@link io.kvtier.config.ConfigReference} writes. {@link
 * io.kvtier.config.Redaction} masks secrets in whatever shows a configuration value, a URL or a
 * message quoting one.
 */
package io.kvtier.config;
