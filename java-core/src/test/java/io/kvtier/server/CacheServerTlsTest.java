package io.kvtier.server;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.kvtier.config.ConfigException;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.remote.server.ServerStore;
import io.kvtier.store.ErrorKind;
import io.kvtier.store.RemoteTierProvider;
import io.kvtier.store.RemoteTierProvider.PingException;
import io.kvtier.testing.Await;
import java.lang.foreign.ValueLayout;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The cache server over TLS (kvtiers://) and its Prometheus stats port. */
class CacheServerTlsTest {
  static final int CHUNK = 1 << 20;

  @TempDir static Path certs;
  static Path cert;
  static Path key;
  static Path otherCert;

  ChunkPool pool;

  /** A self-signed certificate for 127.0.0.1 and localhost, and one for another name. */
  @BeforeAll
  static void makeCertificates() throws Exception {
    cert = certs.resolve("cert.pem");
    key = certs.resolve("key.pem");
    otherCert = certs.resolve("other.pem");
    assumeTrue(
        openssl(cert, key, "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        "openssl is needed to make test certificates");
    assumeTrue(
        openssl(otherCert, certs.resolve("other-key.pem"), "subjectAltName=DNS:cache.example"));
  }

  static boolean openssl(Path certificate, Path privateKey, String san) throws Exception {
    try {
      Process p =
          new ProcessBuilder(
                  "openssl",
                  "req",
                  "-x509",
                  "-newkey",
                  "rsa:2048",
                  "-nodes",
                  "-days",
                  "2",
                  "-subj",
                  "/CN=kvtier-test",
                  "-addext",
                  san,
                  "-keyout",
                  privateKey.toString(),
                  "-out",
                  certificate.toString())
              .redirectErrorStream(true)
              .start();
      p.getInputStream().readAllBytes();
      return p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0;
    } catch (java.io.IOException e) {
      return false;
    }
  }

  @BeforeEach
  void setUp() {
    pool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK, 16L * CHUNK, 1 << 24);
  }

  @AfterEach
  void tearDown() throws Exception {
    Await.until(
        "client buffers to be released",
        () -> pool.inUseSlots() == 0,
        () -> "a client buffer leaked: " + pool.inUseSlots() + " in use");
    pool.close();
  }

  static CacheServer.Settings plain(String secret) {
    return new CacheServer.Settings(
        "127.0.0.1", 0, 8L * CHUNK, CHUNK, null, 0, secret == null ? null : secret.getBytes(), 2);
  }

  ServerStore client(String url) {
    return new ServerStore(url, 2000, 64, CHUNK, pool::tryAllocate);
  }

  static ChunkKey key(int i) {
    return new ChunkKey(9, i, i);
  }

  /** Puts a random chunk under key i and returns its bytes. */
  byte[] put(ServerStore s, int i) throws InterruptedException {
    byte[] bytes = new byte[CHUNK];
    new Random(i).nextBytes(bytes);
    ChunkBuffer b = pool.tryAllocate(CHUNK);
    b.segment().copyFrom(java.lang.foreign.MemorySegment.ofArray(bytes));
    assertTrue(s.put(key(i), b));
    b.release();
    assertTrue(s.awaitIdle(60_000), "the put was never acknowledged");
    return bytes;
  }

  @Test
  void overTls_chunksGoAndComeBackByteForByte_andTheSecretIsChecked() throws Exception {
    try (CacheServer srv = new CacheServer(plain("s3cret").withTls(cert, key))) {
      String url = "kvtiers://:s3cret@127.0.0.1:" + srv.port() + "?ca=" + cert;
      try (ServerStore s = client(url)) {
        assertTrue(s.connected(), "no TLS connection");
        byte[] a = put(s, 1);
        byte[] b = put(s, 2);
        assertEquals(2, s.prefixLength(new ChunkKey[] {key(1), key(2), key(3)}));
        ChunkBuffer[] got = s.getBatch(new ChunkKey[] {key(2), key(1), key(3)});
        assertArrayEquals(b, got[0].segment().toArray(ValueLayout.JAVA_BYTE));
        assertArrayEquals(a, got[1].segment().toArray(ValueLayout.JAVA_BYTE));
        assertNull(got[2]);
        got[0].release();
        got[1].release();
        assertEquals(0, s.stats().errorCount(), () -> "errors: " + s.stats().errors());
      }
      try (ServerStore wrong = client("kvtiers://:nope@127.0.0.1:" + srv.port() + "?ca=" + cert)) {
        assertNull(wrong.get(key(1)), "a wrong secret over TLS was let in");
      }
      assertEquals(1, srv.counters().authFailures.sum());
    }
  }

  @Test
  void aClientThatDoesNotTrustTheCertificate_orConnectsInClear_getsMisses() throws Exception {
    try (CacheServer srv = new CacheServer(plain(null).withTls(cert, key))) {
      // No ca=: the JVM's trust store does not know this self-signed certificate.
      try (ServerStore untrusting = client("kvtiers://127.0.0.1:" + srv.port())) {
        assertFalse(untrusting.connected());
        assertNull(untrusting.get(key(1)));
        assertTrue(untrusting.stats().errors().getOrDefault(ErrorKind.UNAVAILABLE, 0L) > 0);
      }
      // Trusted, but issued to another name than the address connected to.
      try (ServerStore wrongName =
          client("kvtiers://127.0.0.1:" + srv.port() + "?ca=" + otherCert)) {
        assertFalse(wrongName.connected());
      }
      try (ServerStore clear = client("kvtier://127.0.0.1:" + srv.port())) {
        assertFalse(clear.connected(), "a plain-TCP client got through a TLS server");
      }
      // The server is still up for a client that gets it right.
      try (ServerStore s = client("kvtiers://127.0.0.1:" + srv.port() + "?ca=" + cert)) {
        byte[] a = put(s, 5);
        ChunkBuffer got = s.get(key(5));
        assertNotNull(got);
        assertArrayEquals(a, got.segment().toArray(ValueLayout.JAVA_BYTE));
        got.release();
      }
    }
  }

  @Test
  void aPlainClientsSecret_neverReachesTheServersLog() throws Exception {
    java.util.List<String> lines = new java.util.concurrent.CopyOnWriteArrayList<>();
    java.util.logging.Logger log = java.util.logging.Logger.getLogger(CacheServer.class.getName());
    java.util.logging.Handler capture =
        new java.util.logging.Handler() {
          @Override
          public void publish(java.util.logging.LogRecord r) {
            lines.add(String.valueOf(r.getMessage()));
          }

          @Override
          public void flush() {}

          @Override
          public void close() {}
        };
    log.addHandler(capture);
    try (CacheServer srv = new CacheServer(plain("hunter2").withTls(cert, key))) {
      try (ServerStore clear = client("kvtier://:hunter2@127.0.0.1:" + srv.port())) {
        assertFalse(clear.connected());
      }
      Await.until(
          "the failed connection to be counted", () -> srv.counters().connectionErrors.sum() > 0);
    } finally {
      log.removeHandler(capture);
    }
    String hex = java.util.HexFormat.of().formatHex("hunter2".getBytes());
    assertTrue(lines.stream().anyMatch(l -> l.contains("not a TLS record")), lines.toString());
    for (String line : lines) {
      assertFalse(line.contains(hex) || line.contains("hunter2"), line);
    }
  }

  @Test
  void ping_overTls_saysWhatFailed() throws Exception {
    RemoteTierProvider provider =
        RemoteTierProvider.all().stream()
            .filter(p -> p.accepts("kvtiers://h:1"))
            .findFirst()
            .orElseThrow();
    try (CacheServer srv = new CacheServer(plain("pw").withTls(cert, key))) {
      String hostPort = "127.0.0.1:" + srv.port();
      assertEquals(3, provider.ping("kvtiers://:pw@" + hostPort + "?ca=" + cert, 2000, 3).length);
      String untrusted =
          assertThrows(
                  PingException.class, () -> provider.ping("kvtiers://:pw@" + hostPort, 2000, 1))
              .getMessage();
      assertTrue(untrusted.contains("TLS handshake"), untrusted);
      String wrongSecret =
          assertThrows(
                  PingException.class,
                  () -> provider.ping("kvtiers://:no@" + hostPort + "?ca=" + cert, 2000, 1))
              .getMessage();
      assertTrue(wrongSecret.startsWith("authentication failed"), wrongSecret);
      assertFalse(wrongSecret.contains("no@"), wrongSecret);
      String clear =
          assertThrows(
                  PingException.class, () -> provider.ping("kvtier://:pw@" + hostPort, 2000, 1))
              .getMessage();
      assertTrue(clear.contains("kvtiers://"), clear);
    }
  }

  @Test
  void badTlsSettings_areRefusedWithTheFileNamed() throws Exception {
    assertThrows(IllegalArgumentException.class, () -> plain(null).withTls(cert, null));
    Path garbage = certs.resolve("garbage.pem");
    Files.writeString(garbage, "not a key");
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () -> new CacheServer(plain(null).withTls(cert, garbage)));
    assertTrue(e.getMessage().contains("garbage.pem"), e.getMessage());
    ConfigException missingCa =
        assertThrows(
            ConfigException.class,
            () -> client("kvtiers://127.0.0.1:1?ca=" + certs.resolve("absent.pem")));
    assertTrue(missingCa.getMessage().contains("absent.pem"), missingCa.getMessage());
    assertThrows(ConfigException.class, () -> client("kvtier://127.0.0.1:1?ca=" + cert));
  }

  @Test
  void statsPort_servesPrometheusText_onLoopback_withWhatHappened() throws Exception {
    try (CacheServer srv = new CacheServer(plain(null).withStatsPort(0))) {
      try (ServerStore s = client("kvtier://127.0.0.1:" + srv.port())) {
        put(s, 1);
        put(s, 2);
        put(s, 2); // already there
        ChunkBuffer got = s.get(key(1));
        got.release();
        assertNull(s.get(key(7)));
      }
      HttpClient http = HttpClient.newHttpClient();
      HttpResponse<String> r =
          http.send(
              HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + srv.statsPort() + "/metrics"))
                  .build(),
              HttpResponse.BodyHandlers.ofString());
      assertEquals(200, r.statusCode());
      String text = r.body();
      assertTrue(text.contains("kvtier_server_puts_total{result=\"stored\"} 2\n"), text);
      assertTrue(text.contains("kvtier_server_get_keys_total{result=\"hit\"} 1\n"), text);
      assertTrue(text.contains("kvtier_server_get_keys_total{result=\"miss\"} 1\n"), text);
      assertTrue(text.contains("kvtier_server_chunks{tier=\"memory\"} 2\n"), text);
      assertTrue(text.contains("kvtier_server_received_bytes_total " + 2L * CHUNK + "\n"), text);
      assertTrue(
          text.contains("kvtier_server_capacity_bytes{tier=\"memory\"} " + 8L * CHUNK), text);
      assertTrue(text.contains("# TYPE kvtier_server_connections_total counter"), text);
      HttpResponse<Void> other =
          http.send(
              HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + srv.statsPort() + "/x"))
                  .build(),
              HttpResponse.BodyHandlers.discarding());
      assertEquals(404, other.statusCode());
    }
    try (CacheServer without = new CacheServer(plain(null))) {
      assertEquals(-1, without.statsPort());
    }
  }
}
