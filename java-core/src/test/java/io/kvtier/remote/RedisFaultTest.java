package io.kvtier.remote;

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
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.foreign.ValueLayout;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * A Redis server that is absent, killed, restarted, slow or answering garbage costs misses and
 * dropped puts, never an exception, a wrong byte or a leaked buffer.
 */
class RedisFaultTest {
  static final int CHUNK = 32 * 1024;

  ChunkPool pool;
  Path dir;

  @BeforeEach
  void setUp() throws Exception {
    RedisServers.assumeInstalled();
    pool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK, 64L * CHUNK, 1 << 21);
    dir = Files.createTempDirectory("redis-fault");
  }

  @AfterEach
  void tearDown() throws Exception {
    if (pool != null) {
      awaitTrue(() -> pool.inUseSlots() == 0, 5000);
      assertEquals(0, pool.inUseSlots(), "a buffer leaked");
      pool.close();
    }
  }

  static void awaitTrue(BooleanSupplier condition, long millis) throws InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(millis);
    while (!condition.getAsBoolean() && System.nanoTime() < deadline) {
      Thread.sleep(10);
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

  /** Puts chunk i and waits until the server has it. */
  void putAndAwait(RedisStore s, int i) throws InterruptedException {
    ChunkBuffer b = chunk(i);
    assertTrue(s.put(key(i), b));
    b.release();
    awaitTrue(() -> s.contains(key(i)), 5000);
    assertTrue(s.contains(key(i)));
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
      assertTrue(s.errorCounts().get("unavailable") >= 1);

      server = RedisServers.start(port, dir);
      awaitTrue(s::connected, (RedisStore.RECONNECT_SECONDS + 5) * 1000);
      assertTrue(s.connected(), "the store connects once the server is up");
      putAndAwait(s, 2);
      assertHolds(s, 2);
    } finally {
      RedisServers.stop(server);
    }
  }

  @Test
  void serverKilledMidRun_thenRestarted_recovers() throws Exception {
    int port = RedisServers.freePort();
    Process server = RedisServers.start(port, dir);
    try (RedisStore s =
        new RedisStore("redis://127.0.0.1:" + port, 300, 0, 16, pool::tryAllocate)) {
      putAndAwait(s, 1);
      server.destroyForcibly().waitFor();
      assertNull(s.get(key(1)), "a dead server is a miss");
      ChunkBuffer b = chunk(3);
      s.put(key(3), b); // dropped or failed, never thrown
      b.release();
      assertFalse(s.contains(key(3)));
      assertTrue(s.stats().misses() >= 1);

      server = RedisServers.start(port, dir);
      awaitTrue(
          () -> {
            ChunkBuffer c = chunk(4);
            s.put(key(4), c);
            c.release();
            return s.contains(key(4));
          },
          40_000);
      assertHolds(s, 4);
    } finally {
      RedisServers.stop(server);
    }
  }

  @Test
  void slowServer_timesOut_asMisses_andLateRepliesAreReleased() throws Exception {
    int port = RedisServers.freePort();
    Process server = RedisServers.start(port, dir, "--enable-debug-command", "yes");
    try (RedisStore s =
        new RedisStore("redis://127.0.0.1:" + port, 200, 0, 16, pool::tryAllocate)) {
      putAndAwait(s, 1);
      Thread sleeper =
          new Thread(
              () -> {
                try {
                  RedisServers.run(
                      "redis-cli", "-p", Integer.toString(port), "DEBUG", "SLEEP", "1.5");
                } catch (Exception ignored) {
                  // the test below notices if the server did not stall
                }
              });
      sleeper.start();
      Thread.sleep(200); // the server is now asleep
      long t0 = System.nanoTime();
      assertNull(s.get(key(1)), "a stalled server is a miss");
      long waitedMillis = (System.nanoTime() - t0) / 1_000_000;
      assertTrue(waitedMillis < 1000, "the get must give up at the timeout: " + waitedMillis);
      assertTrue(s.errorCounts().getOrDefault("timeout", 0L) >= 1, s.errorCounts().toString());
      sleeper.join();
      awaitTrue(() -> pool.inUseSlots() == 0, 5000); // the late reply is released on arrival
      assertEquals(0, pool.inUseSlots());
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
