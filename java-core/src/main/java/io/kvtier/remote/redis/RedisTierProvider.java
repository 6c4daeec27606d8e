package io.kvtier.remote.redis;

import io.kvtier.config.KvTierConfig;
import io.kvtier.store.KvStore;
import io.kvtier.store.RemoteTierProvider;
import io.kvtier.store.TierContext;

/** Opens a Redis or Valkey tier when {@code remote_url} is a {@code redis*://} URL. */
public final class RedisTierProvider extends RemoteTierProvider {
  public RedisTierProvider() {
    super("redis");
  }

  @Override
  protected KvStore open(String url, KvTierConfig config, TierContext context) {
    return new RedisStore(
        url,
        config.remoteTimeoutMs(),
        config.remoteTtlSec(),
        config.remoteQueue(),
        config.remoteHashTags(),
        context.buffers());
  }

  @Override
  public long[] ping(String url, long timeoutMillis, int rounds) throws PingException {
    return RedisPing.ping(url, timeoutMillis, rounds);
  }
}
