package io.kvtier.remote.server;

import io.kvtier.config.KvTierConfig;
import io.kvtier.store.KvStore;
import io.kvtier.store.RemoteTierProvider;
import io.kvtier.store.TierContext;

/**
 * Opens a tier on kvtier's own cache server when {@code remote_url} is a {@code kvtier://} or
 * {@code kvtiers://} (TLS) URL.
 */
public final class ServerTierProvider extends RemoteTierProvider {
  public ServerTierProvider() {
    super("kvtier://", "kvtiers://");
  }

  @Override
  protected KvStore open(String url, KvTierConfig config, TierContext context) {
    return new ServerStore(
        url,
        config.remoteTimeoutMs(),
        config.remoteQueue(),
        context.chunkBytes(),
        context.buffers());
  }

  @Override
  public long[] ping(String url, long timeoutMillis, int rounds) throws PingException {
    return ServerPing.ping(url, timeoutMillis, rounds);
  }
}
