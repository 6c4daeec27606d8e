package io.kvtier.remote.server;

import io.kvtier.config.KvTierConfig;
import io.kvtier.store.KvStore;
import io.kvtier.store.TierContext;
import io.kvtier.store.TierProvider;

/** Opens a tier on kvtier's own cache server when {@code remote_url} is a {@code kvtier://} URL. */
public final class ServerTierProvider implements TierProvider {
  /** Remote tiers come after local ones. */
  private static final int ORDER = 200;

  @Override
  public int order() {
    return ORDER;
  }

  @Override
  public KvStore open(KvTierConfig config, TierContext context) {
    String url = config.remoteUrl();
    if (url == null || !url.startsWith("kvtier://")) {
      return null;
    }
    return new ServerStore(
        url,
        config.remoteTimeoutMs(),
        config.remoteQueue(),
        context.chunkBytes(),
        context.buffers());
  }
}
