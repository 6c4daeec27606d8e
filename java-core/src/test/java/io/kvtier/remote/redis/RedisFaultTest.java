package io.kvtier.remote.redis;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.store.ErrorKind;
import io.kvtier.testing.Await;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.foreign.ValueLayout;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * A Redis server that is absent, killed, restarted, slow or answering garbage costs misses and
 * dropped puts, never an exception, a wrong byte or a leaked buffer. The tests that run {@code
 * redis-server} skip, saying so, where it is not installed; the others need no server.
 */
class RedisFaultTest {
  static final int CHUNK = 32 * 1024;

  ChunkPool pool;
  Path dir;

  @BeforeEach
  void setUp() throws Exception {
    pool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK, 64L * CHUNK, 1 << 21);
    dir = Files.createTempDirectory("redis-fault");
  }

  @AfterEach
  void tearDown() throws Exception {
    if (pool != null) { // null when skipped before setUp made it
      // Stores are closed; a reply still landing on an event loop releases its buffer.
      Await.until(
          "buffers to be released",
          () -> pool.inUseSlots() == 0,
          () -> "a buffer leaked: " + pool.inUseSlots() + " in use");
      pool.close();
    }
  }

  ChunkBuffer chunk(int seed) {
    ChunkBuffer b = pool.tryAllocate(CHUNK);
    b.segment().fill((byte) seed);
    return b;
  }

  static ChunkKey key(int i) {
    return new ChunkKey(8, i, i);
  }

  /** Puts chunk i and waits until the server has acknowledged it. */
  void putAndAwait(RedisStore s, int i) throws InterruptedException {
    ChunkBuffer b = chunk(i);
    assertTrue(s.put(key(i), b));
    b.release();
    assertTrue(s.awaitIdle(60_000), "the put was never answered");
    assertTrue(s.contains(key(i)), "an acknowledged put is visible: " + s.errorCounts());
  }

  void assertHolds(RedisStore s, int i) {
    ChunkBuffer got = s.get(key(i));
    assertNotNull(got);
    byte[] expected = new byte[CHUNK];
    java.util.Arrays.fill(expected, (byte) i);
    assertArrayEquals(expected, got.segment().toArray(ValueLayout.JAVA_BYTE));
    got.release();
  }

  @Test
  void serverAbsentAtStart_missesAndDrops_thenConnectsWhenItAppears() throws Exception {
    RedisServers.assumeInstalled();
    int port = RedisServers.freePort();
    Process server = null;
    try (RedisStore s =
        new RedisStore("redis://127.0.0.1:" + port, 300, 0, 16, pool::tryAllocate)) {
      assertFalse(s.connected());
      ChunkBuffer b = chunk(1);
      assertFalse(s.put(key(1), b), "dropped while the server is absent");
      b.release();
      assertNull(s.get(key(1)));
      assertFalse(s.contains(key(1)));
      assertEquals(1, s.stats().droppedPuts());
      assertTrue(s.errorCounts().get(ErrorKind.UNAVAILABLE) >= 1);

      server = RedisServers.start(port, dir);
      // The store retries every RECONNECT_SECONDS on its own schedule: nothing to wait on.
      Await.until("the store to connect once the server is up", s::connected);
      putAndAwait(s, 2);
      assertHolds(s, 2);
    } finally {
      RedisServers.stop(server);
    }
  }

  @Test
  void serverKilledMidRun_thenRestarted_recovers() throws Exception {
    RedisServers.assumeInstalled();
    int port = RedisServers.freePort();
    Process server = RedisServers.start(port, dir);
    try (RedisStore s =
        new RedisStore("redis://127.0.0.1:" + port, 300, 0, 16, pool::tryAllocate)) {
      putAndAwait(s, 1);
      server.destroyForcibly().waitFor();
      long missesBefore = s.stats().misses();
      assertNull(s.get(key(1)), "a dead server is a miss");
      assertEquals(missesBefore + 1, s.stats().misses(), "and is counted as one");
      ChunkBuffer b = chunk(3);
      s.put(key(3), b); // dropped or failed, never thrown
      b.release();
      assertFalse(s.contains(key(3)));

      server = RedisServers.start(port, dir);
      // Lettuce reconnects with its own backoff; until then puts are dropped, so keep putting.
      Await.until(
          "a put to succeed after the restart",
          () -> {
            ChunkBuffer c = chunk(4);
            s.put(key(4), c);
            c.release();
            return s.awaitIdle(60_000) && s.contains(key(4));
          },
          () -> s.errorCounts().toString());
      assertHolds(s, 4);
    } finally {
      RedisServers.stop(server);
    }
  }

  @Test
  void slowServer_timesOut_asMisses_andLateRepliesAreReleased() throws Exception {
    RedisServers.assumeInstalled();
    int port = RedisServers.freePort();
    Process server = RedisServers.start(port, dir);
    java.util.concurrent.atomic.AtomicInteger values =
        new java.util.concurrent.atomic.AtomicInteger();
    try (RedisStore s =
        new RedisStore(
            "redis://127.0.0.1:" + port,
            200,
            0,
            16,
            n -> {
              values.incrementAndGet(); // one buffer asked for per value received
              return pool.tryAllocate(n);
            })) {
      putAndAwait(s, 1);
      long hitsBefore = s.stats().hits();
      int valuesBefore = values.get();
      RedisServers.suspend(server); // answers nothing until resumed
      try {
        // The server stays stopped until resumed below, so a get that waited for its reply would
        // not return at all: returning is giving up.
        assertNull(s.get(key(1)), "a stalled server is a miss");
        assertEquals(
            1L, s.errorCounts().getOrDefault(ErrorKind.TIMEOUT, 0L), s.errorCounts().toString());
      } finally {
        RedisServers.resume(server);
      }
      // The reply the get gave up on arrives now, into a buffer nobody will take: released.
      Await.until(
          "the late reply to arrive and be released",
          () -> values.get() == valuesBefore + 1 && pool.inUseSlots() == 0,
          () -> (values.get() - valuesBefore) + " values arrived, " + pool.inUseSlots() + " held");
      assertEquals(hitsBefore, s.stats().hits(), "the late reply is not counted as a hit");
      assertHolds(s, 1);
    } finally {
      RedisServers.stop(server);
    }
  }

  @Test
  void serverAnsweringGarbage_isMissesAndDrops() throws Exception {
    try (ServerSocket garbage = new ServerSocket(0)) {
      Thread t =
          new Thread(
              () -> {
                while (!garbage.isClosed()) {
                  try (Socket c = garbage.accept()) {
                    c.setSoTimeout(2000);
                    InputStream in = c.getInputStream();
                    OutputStream out = c.getOutputStream();
                    byte[] buf = new byte[4096];
                    while (in.read(buf) > 0) {
                      out.write(
                          "HTTP/1.1 400 Bad Request\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
                    }
                  } catch (Exception ignored) {
                    // next connection
                  }
                }
              });
      t.setDaemon(true);
      t.start();
      try (RedisStore s =
          new RedisStore(
              "redis://127.0.0.1:" + garbage.getLocalPort(), 300, 0, 16, pool::tryAllocate)) {
        ChunkBuffer b = chunk(1);
        s.put(key(1), b);
        b.release();
        assertNull(s.get(key(1)));
        assertFalse(s.contains(key(1)));
        long errors = s.errorCounts().values().stream().mapToLong(Long::longValue).sum();
        assertTrue(errors >= 1, "garbage must be counted: " + s.errorCounts());
      }
    }
  }

  @Test
  void malformedOrUnknownUrl_failsAtStartNamingIt() {
    var e =
        org.junit.jupiter.api.Assertions.assertThrows(
            io.kvtier.config.ConfigException.class,
            () -> new RedisStore("memcached://x:1", 100, 0, 1, pool::tryAllocate));
    assertTrue(e.getMessage().contains("remote_url=memcached://x:1"), e.getMessage());
  }
}
