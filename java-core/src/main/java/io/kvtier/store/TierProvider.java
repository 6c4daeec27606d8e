package io.kvtier.store;

import io.kvtier.config.KvTierConfig;

/**
 * Opens one kind of tier below the CPU tier (disk, a remote store) when the configuration asks for
 * it. {@link Tiers} finds the providers with {@link java.util.ServiceLoader} (listed in {@code
 * META-INF/services/io.kvtier.store.TierProvider}), so the code that composes tiers names no
 * concrete lower tier and a new tier needs no change outside its own package.
 *
 * <p>Implementations must comply with:
 *
 * <ul>
 *   <li>A public no-argument constructor; instances are stateless and thread-safe.
 *   <li>{@link #open} returns null, without side effects, when the configuration does not ask for
 *       this tier; otherwise a started tier, or it throws, leaving nothing open.
 *   <li>{@link #open} does not wait on the network: a remote tier that cannot connect yet starts
 *       disconnected and reconnects in the background.
 * </ul>
 */
public interface TierProvider {

  /**
   * Where this provider's tier goes among the lower tiers: smaller is faster (disk before remote).
   */
  int order();

  /**
   * Opens this provider's tier for {@code config}, or returns null if {@code config} does not ask
   * for it.
   *
   * @throws io.kvtier.config.ConfigException if a setting of this tier cannot be honoured
   * @throws IllegalStateException if the tier cannot start (a directory that cannot be created)
   */
  KvStore open(KvTierConfig config, TierContext context);
}
