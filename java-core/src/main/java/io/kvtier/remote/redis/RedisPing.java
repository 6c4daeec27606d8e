package io.kvtier.remote.redis;

import io.kvtier.config.Redaction;
import io.kvtier.store.RemoteTierProvider.PingException;
import io.lettuce.core.ClientOptions;
import io.lettuce.core.RedisClient;
import io.lettuce.core.RedisCommandExecutionException;
import io.lettuce.core.RedisCommandTimeoutException;
import io.lettuce.core.RedisConnectionException;
import io.lettuce.core.RedisURI;
import io.lettuce.core.SocketOptions;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.api.sync.BaseRedisCommands;
import io.lettuce.core.cluster.ClusterClientOptions;
import io.lettuce.core.cluster.RedisClusterClient;
import io.lettuce.core.cluster.api.StatefulRedisClusterConnection;
import java.time.Duration;
import java.util.Locale;
import java.util.concurrent.TimeUnit;

/** {@code kvtier ping} for the Redis and Valkey URLs the tier accepts (TLS, sentinel, cluster). */
final class RedisPing {
  private RedisPing() {}

  static long[] ping(String url, long timeoutMillis, int rounds) throws PingException {
    Duration timeout = Duration.ofMillis(timeoutMillis);
    SocketOptions socket = SocketOptions.builder().connectTimeout(timeout).build();
    String lower = url.toLowerCase(Locale.ROOT);
    try {
      if (lower.startsWith("redis-cluster://") || lower.startsWith("rediss-cluster://")) {
        RedisClusterClient client = RedisClusterClient.create(RedisStore.clusterUris(url));
        try {
          client.setOptions(ClusterClientOptions.builder().socketOptions(socket).build());
          try (StatefulRedisClusterConnection<String, String> c = client.connect()) {
            c.setTimeout(timeout);
            return rounds(c.sync(), rounds);
          }
        } finally {
          client.shutdown(0, timeoutMillis, TimeUnit.MILLISECONDS);
        }
      }
      RedisURI uri = RedisURI.create(url);
      uri.setTimeout(timeout);
      RedisClient client = RedisClient.create(uri);
      try {
        client.setOptions(ClientOptions.builder().socketOptions(socket).build());
        try (StatefulRedisConnection<String, String> c = client.connect()) {
          return rounds(c.sync(), rounds);
        }
      } finally {
        client.shutdown(0, timeoutMillis, TimeUnit.MILLISECONDS);
      }
    } catch (RedisConnectionException e) {
      Throwable cause = e;
      while (cause.getCause() != null) {
        cause = cause.getCause();
      }
      String why = String.valueOf(cause.getMessage());
      if (cause instanceof RedisCommandExecutionException
          && (why.startsWith("WRONGPASS") || why.startsWith("NOAUTH") || why.contains("AUTH"))) {
        throw new PingException("authentication failed: " + Redaction.text(why, url));
      }
      throw new PingException(
          "cannot connect: " + Redaction.text(e.getMessage() + " (" + why + ")", url));
    } catch (RedisCommandTimeoutException e) {
      throw new PingException("no answer within " + timeoutMillis + " ms");
    } catch (RedisCommandExecutionException e) {
      String why = String.valueOf(e.getMessage());
      throw new PingException(
          (why.startsWith("NOAUTH") ? "authentication failed: " : "the server refused: ")
              + Redaction.text(why, url));
    } catch (IllegalArgumentException e) {
      throw new PingException("not a valid URL: " + Redaction.text(e.getMessage(), url));
    }
  }

  private static long[] rounds(BaseRedisCommands<String, String> commands, int rounds)
      throws PingException {
    long[] out = new long[rounds];
    for (int i = 0; i < rounds; i++) {
      long t0 = System.nanoTime();
      String reply = commands.ping();
      out[i] = System.nanoTime() - t0;
      if (!"PONG".equals(reply)) {
        throw new PingException("not a Redis or Valkey server: PING answered " + reply);
      }
    }
    return out;
  }
}
