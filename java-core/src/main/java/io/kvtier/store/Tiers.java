package io.kvtier.store;

import io.kvtier.config.ConfigException;
import io.kvtier.config.KvTierConfig;
import io.kvtier.memory.ChunkAllocator;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.ServiceLoader;

/**
 * Assembles the tiers a configuration asks for: the CPU tier over a pool, then every lower tier a
 * {@link TierProvider} opens, fastest first, composed in a {@link TieredStore}. The one place where
 * tiers are made; the engine and the cache server both call it.
 */
public final class Tiers {
  private Tiers() {}

  /** The providers on the class path, fastest tier first. */
  private static final List<TierProvider> PROVIDERS = providers();

  private static List<TierProvider> providers() {
    List<TierProvider> all = new ArrayList<>();
    ServiceLoader.load(TierProvider.class, TierProvider.class.getClassLoader()).forEach(all::add);
    all.sort(Comparator.comparingInt(TierProvider::order));
    return List.copyOf(all);
  }

  /**
   * Opens the tiers {@code config} asks for over {@code pool}. A tier whose start fails closes the
   * ones opened before it; the pool stays the caller's.
   *
   * @param rank this process's tensor-parallel rank
   * @param writesRemote false to wrap a remote tier read-only (a rank whose KV another rank saves)
   * @throws ConfigException if {@code remote_url} names a store no provider opens, or a provider
   *     rejects a setting
   * @throws IllegalStateException if a tier cannot start
   */
  public static TieredStore open(
      KvTierConfig config, ChunkAllocator pool, int rank, boolean writesRemote) {
    CpuStore cpu = new CpuStore(pool, config.maxLocalCpuBytes(), config.cachePolicy());
    TierContext context = new TierContext(rank, pool.maxBytes(), cpu::allocate);
    List<KvStore> lower = new ArrayList<>();
    try {
      boolean remote = false;
      for (TierProvider provider : PROVIDERS) {
        KvStore tier = provider.open(config, context);
        if (tier == null) {
          continue;
        }
        remote |= tier.isRemote();
        if (tier.isRemote()) {
          tier = new RemoteBreaker(writesRemote ? tier : new ReadOnlyTier(tier));
        }
        lower.add(tier);
      }
      if (config.remoteUrl() != null && !remote) {
        throw new ConfigException(
            "remote_url: no remote tier on the class path opens "
                + io.kvtier.config.Redaction.url(config.remoteUrl()));
      }
      return new TieredStore(
          cpu, lower, config.copyDownThreads(), config.copyDownQueue(), config.localCpu());
    } catch (RuntimeException | Error e) {
      for (KvStore tier : lower) {
        try {
          tier.close();
        } catch (RuntimeException suppressed) {
          e.addSuppressed(suppressed);
        }
      }
      cpu.close();
      throw e;
    }
  }
}
