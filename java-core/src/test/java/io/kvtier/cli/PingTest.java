package io.kvtier.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.remote.redis.RedisServers;
import io.kvtier.server.CacheServer;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code kvtier ping} against real stores: kvtier's cache server with a shared secret and a Redis
 * server with a password; each failure says which (address, password), within the timeout, and
 * never prints the password.
 */
class PingTest {
  @TempDir Path dir;
  final ByteArrayOutputStream out = new ByteArrayOutputStream();
  final ByteArrayOutputStream err = new ByteArrayOutputStream();

  int ping(String... args) {
    out.reset();
    err.reset();
    String[] all = new String[args.length + 1];
    all[0] = "ping";
    System.arraycopy(args, 0, all, 1, args.length);
    return new Cli(
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8))
        .run(all);
  }

  String said() {
    return out.toString(StandardCharsets.UTF_8) + err.toString(StandardCharsets.UTF_8);
  }

  @Test
  void kvtierCacheServer() throws Exception {
    byte[] secret = "open-sesame".getBytes(StandardCharsets.UTF_8);
    try (CacheServer server =
        new CacheServer(
            new CacheServer.Settings("127.0.0.1", 0, 64L << 20, 1L << 20, null, 0, secret, 2))) {
      String at = "127.0.0.1:" + server.port();
      assertEquals(Cli.OK, ping("kvtier://:open-sesame@" + at));
      assertTrue(said().contains("5 round trips, min "), said());
      assertFalse(said().contains("open-sesame"), "the secret never shows");

      assertEquals(Cli.PROBLEMS, ping("kvtier://:not-the-secret-42@" + at));
      assertTrue(said().contains("authentication failed"), said());
      assertFalse(said().contains("not-the-secret-42"), "the secret never shows, right or wrong");
    }
    int closed = RedisServers.freePort();
    assertEquals(Cli.PROBLEMS, ping("kvtier://127.0.0.1:" + closed, "--timeout-ms", "2000"));
    assertTrue(said().contains("cannot connect to 127.0.0.1:" + closed), said());
  }

  @Test
  void redisWithAPassword() throws Exception {
    RedisServers.assumeInstalled();
    int port = RedisServers.freePort();
    Process redis = RedisServers.start(port, dir);
    try {
      RedisServers.run(
          "redis-cli", "-p", Integer.toString(port), "CONFIG", "SET", "requirepass", "hunter2");
      assertEquals(Cli.OK, ping("redis://:hunter2@127.0.0.1:" + port));
      assertTrue(said().contains("5 round trips"), said());
      assertFalse(said().contains("hunter2"));

      assertEquals(Cli.PROBLEMS, ping("redis://:not-the-password-42@127.0.0.1:" + port));
      assertTrue(said().contains("authentication failed"), said());
      assertFalse(said().contains("not-the-password-42"), said());

      assertEquals(Cli.PROBLEMS, ping("redis://127.0.0.1:" + port));
      assertTrue(said().contains("authentication failed"), "no password given: " + said());
    } finally {
      RedisServers.stop(redis);
    }
    assertEquals(Cli.PROBLEMS, ping("redis://127.0.0.1:" + port, "--timeout-ms", "2000"));
    assertTrue(said().contains("cannot connect"), said());
  }

  @Test
  void badUrlsAndFlagsAreUsageErrors() {
    assertEquals(Cli.USAGE, ping("memcached://127.0.0.1:11211"));
    assertTrue(said().contains("unknown scheme"), said());
    assertEquals(Cli.USAGE, ping());
    assertEquals(Cli.USAGE, ping("redis://127.0.0.1:1", "--timeout-ms", "soon"));
    assertEquals(Cli.OK, ping("--help"));
    assertTrue(said().contains("usage: kvtier ping URL"));
  }
}
