package io.kvtier.remote.redis;

import io.kvtier.config.KvTierConfig;
import io.kvtier.store.KvStore;
import io.kvtier.store.TierContext;
import io.kvtier.store.TierProvider;

/** Opens a Redis or Valkey tier when {@code remote_url} is a {@code redis*://} URL. */
public final class RedisTierProvider implements TierProvider {
  /** Remote tiers come after local ones. */
  private static final int ORDER = 200;

  @Override
  public int order() {
    return ORDER;
  }

  @Override
  public KvStore open(KvTierConfig config, TierContext context) {
    String url = config.remoteUrl();
    if (url == null || !url.startsWith("redis")) {
      return null;
    }
    return new RedisStore(
        url,
        config.remoteTimeoutMs(),
        config.remoteTtlSec(),
        config.remoteQueue(),
        config.remoteHashTags(),
        context.buffers());
  }
}
