package io.kvtier.remote.redis;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.LogCapture;
import io.kvtier.config.ConfigException;
import java.io.IOException;
import java.net.ServerSocket;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** What RedisStore shows of its URL, with no server needed: never the password. */
class RedisStoreUrlTest {
  /** A loopback port nothing listens on (bound, then closed). */
  static int closedPort() throws IOException {
    try (ServerSocket s = new ServerSocket(0)) {
      return s.getLocalPort();
    }
  }

  @ParameterizedTest
  @ValueSource(
      strings = {
        "redis://user:hunter2@[bad",
        "rediss://user:hunter2@[bad",
        "redis-sentinel://:hunter2@[bad",
        "redis-cluster://:hunter2@[bad",
        "redis-cluster://:hunter2@h1:7000,,h2:7001",
        "memcached://user:hunter2@127.0.0.1:11211"
      })
  void malformedUrl_messageNamesTheKeyButNotThePassword(String url) {
    ConfigException e =
        assertThrows(ConfigException.class, () -> new RedisStore(url, 100, 0, 4, n -> null));
    assertFalse(e.getMessage().contains("hunter2"), e.getMessage());
    assertTrue(e.getMessage().contains("remote_url="), e.getMessage());
  }

  @ParameterizedTest
  @ValueSource(strings = {"redis://user:hunter2@127.0.0.1:%d", "rediss://:hunter2@127.0.0.1:%d"})
  void serverDown_logsAndToStringShowNoPassword(String form) throws IOException {
    String url = form.formatted(closedPort());
    String shown;
    try (LogCapture log = new LogCapture();
        RedisStore store = new RedisStore(url, 200, 0, 4, n -> null)) {
      shown = store.toString() + "\n" + log.text();
      assertTrue(log.text().contains("cannot connect to"), log.text());
    }
    assertFalse(shown.contains("hunter2"), shown);
    assertTrue(shown.contains(":***@127.0.0.1"), shown);
  }
}
