package io.kvtier.remote.redis;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.store.ErrorKind;
import io.kvtier.testing.Await;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** TLS and sentinel deployments, and bounded memory while a server stalls, all on real servers. */
class RedisTopologiesTest {
  static final int CHUNK = 32 * 1024;

  @TempDir Path dir;
  ChunkPool pool;

  @BeforeEach
  void setUp() {
    RedisServers.assumeInstalled();
    pool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK, 64L * CHUNK, 1 << 21);
  }

  @AfterEach
  void tearDown() throws Exception {
    if (pool == null) {
      return; // skipped before setUp made it
    }
    // Stores are closed; a reply still landing on an event loop releases its buffer.
    Await.until(
        "buffers to be released",
        () -> pool.inUseSlots() == 0,
        () -> "a buffer leaked: " + pool.inUseSlots() + " in use");
    pool.close();
  }

  /** Puts {@code keys[i]} filled with {@code i + first} and waits until the server has them. */
  void putAll(RedisStore s, ChunkKey[] keys, int first) throws InterruptedException {
    for (int i = 0; i < keys.length; i++) {
      ChunkBuffer b = pool.tryAllocate(CHUNK);
      b.segment().fill((byte) (i + first));
      assertTrue(s.put(keys[i], b));
      b.release();
    }
    assertTrue(s.awaitIdle(60_000), "puts still in flight");
    assertEquals(keys.length, s.stats().puts(), "every put acknowledged: " + s.errorCounts());
  }

  void roundTrip(RedisStore s) throws InterruptedException {
    ChunkBuffer b = pool.tryAllocate(CHUNK);
    b.segment().fill((byte) 42);
    ChunkKey k = new ChunkKey(1, 2, 3);
    assertTrue(s.put(k, b));
    b.release();
    assertTrue(s.awaitIdle(60_000), "the put was never acknowledged");
    ChunkBuffer got = s.get(k);
    assertNotNull(got);
    byte[] expected = new byte[CHUNK];
    Arrays.fill(expected, (byte) 42);
    assertArrayEquals(expected, got.segment().toArray(ValueLayout.JAVA_BYTE));
    got.release();
  }

  @Test
  void aclUserAndDatabase_roundTrip_andAWrongPasswordIsMisses() throws Exception {
    int port = RedisServers.freePort();
    Process server =
        RedisServers.start(
            port, dir, "--user", "alice", "on", ">s3cret", "~*", "&*", "+@all", "--save", "");
    try {
      try (RedisStore s =
          new RedisStore(
              "redis://alice:s3cret@127.0.0.1:" + port + "/3", 2000, 0, 16, pool::tryAllocate)) {
        roundTrip(s);
      }
      // the chunk went to database 3, as the URL says
      assertEquals("1", RedisServers.run("redis-cli", "-p", "" + port, "-n", "3", "DBSIZE").trim());
      try (RedisStore wrong =
          new RedisStore(
              "redis://alice:nope@127.0.0.1:" + port + "/3", 2000, 0, 16, pool::tryAllocate)) {
        assertEquals(null, wrong.get(new ChunkKey(1, 2, 3)));
        assertEquals(1, wrong.stats().misses());
      }
    } finally {
      RedisServers.stop(server);
    }
  }

  @Test
  void valuesThatFindNoBuffer_areMisses_andLaterRepliesStayInStep() throws Exception {
    int port = RedisServers.freePort();
    Process server = RedisServers.start(port, dir, "--save", "");
    ChunkPool small = new ChunkPool(MmapAllocator.INSTANCE, CHUNK, 2L * CHUNK, 1 << 21);
    try (RedisStore s =
        new RedisStore("redis://127.0.0.1:" + port, 2000, 0, 16, small::tryAllocate)) {
      ChunkKey[] keys = new ChunkKey[4];
      for (int i = 0; i < keys.length; i++) {
        keys[i] = new ChunkKey(1, 10 + i, 3);
      }
      putAll(s, keys, 0);
      ChunkBuffer[] got = s.getBatch(keys); // two slots for four values
      assertNotNull(got[0]);
      assertNotNull(got[1]);
      assertEquals(null, got[2]);
      assertEquals(null, got[3]);
      for (int i = 0; i < 2; i++) {
        assertEquals((byte) i, got[i].segment().get(ValueLayout.JAVA_BYTE, CHUNK - 1));
        got[i].release();
      }
      ChunkBuffer last = s.get(keys[3]);
      assertNotNull(last);
      byte[] expected = new byte[CHUNK];
      Arrays.fill(expected, (byte) 3);
      assertArrayEquals(expected, last.segment().toArray(ValueLayout.JAVA_BYTE));
      last.release();
    } finally {
      RedisServers.stop(server);
      assertEquals(0, small.inUseSlots());
      small.close();
    }
  }

  @Test
  void concurrentBatchedGets_eachGetTheirOwnValues() throws Exception {
    int port = RedisServers.freePort();
    Process server = RedisServers.start(port, dir, "--save", "");
    try (RedisStore s =
        new RedisStore("redis://127.0.0.1:" + port, 5000, 0, 64, pool::tryAllocate)) {
      ChunkKey[] keys = new ChunkKey[16];
      for (int i = 0; i < keys.length; i++) {
        keys[i] = new ChunkKey(7, 100 + i, 5);
      }
      putAll(s, keys, 1);
      java.util.concurrent.ExecutorService threads =
          java.util.concurrent.Executors.newFixedThreadPool(4);
      java.util.List<java.util.concurrent.Future<Integer>> results = new java.util.ArrayList<>();
      for (int t = 0; t < 4; t++) {
        long seed = t;
        results.add(
            threads.submit(
                () -> {
                  java.util.Random r = new java.util.Random(seed);
                  int checked = 0;
                  for (int round = 0; round < 50; round++) {
                    int[] idx = r.ints(3, 0, keys.length).toArray();
                    ChunkKey[] batch = {keys[idx[0]], keys[idx[1]], keys[idx[2]]};
                    ChunkBuffer[] got = s.getBatch(batch);
                    for (int j = 0; j < batch.length; j++) {
                      assertNotNull(got[j], "a stored value went missing");
                      assertFilled(got[j], (byte) (idx[j] + 1), CHUNK);
                      got[j].release();
                      checked++;
                    }
                  }
                  return checked;
                }));
      }
      for (var f : results) {
        assertEquals(150, f.get(60, TimeUnit.SECONDS));
      }
      threads.shutdown();
    } finally {
      RedisServers.stop(server);
    }
  }

  /** Checks every byte of a buffer. */
  static void assertFilled(ChunkBuffer b, byte value, int length) {
    byte[] expected = new byte[length];
    Arrays.fill(expected, value);
    assertArrayEquals(expected, b.segment().toArray(ValueLayout.JAVA_BYTE));
  }

  @Test
  void tls_roundTrip() throws Exception {
    assumeTrue(Files.isExecutable(Path.of("/usr/bin/openssl")), "openssl is not installed");
    RedisServers.run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        dir.resolve("key.pem").toString(),
        "-out",
        dir.resolve("cert.pem").toString());
    int port = RedisServers.freePort();
    Process server =
        RedisServers.startTls(
            port,
            dir,
            "--tls-cert-file",
            dir.resolve("cert.pem").toString(),
            "--tls-key-file",
            dir.resolve("key.pem").toString(),
            "--tls-ca-cert-file",
            dir.resolve("cert.pem").toString(),
            "--tls-auth-clients",
            "no");
    try (RedisStore s =
        new RedisStore(
            "rediss://127.0.0.1:" + port + "?verifyPeer=NONE", 2000, 0, 16, pool::tryAllocate)) {
      assertTrue(s.connected(), s.errorCounts().toString());
      roundTrip(s);
    } finally {
      RedisServers.stop(server);
    }
  }

  /**
   * Through a sentinel: the master it names serves puts and gets; after a failover and the old
   * master's death, reads find the same bytes at the new master (GET connections ask the sentinel
   * again when they reconnect).
   */
  @Test
  void sentinel_findsTheMaster_roundTrips_andFollowsAFailover() throws Exception {
    int masterPort = RedisServers.freePort();
    Process master = RedisServers.start(masterPort, Files.createDirectories(dir.resolve("m")));
    int replicaPort = RedisServers.freePort();
    Process replica =
        RedisServers.start(
            replicaPort,
            Files.createDirectories(dir.resolve("r")),
            "--replicaof",
            "127.0.0.1",
            Integer.toString(masterPort));
    int sentinelPort = RedisServers.freePort();
    Path conf = dir.resolve("sentinel.conf");
    Files.writeString(
        conf,
        "port "
            + sentinelPort
            + "\nbind 127.0.0.1\nsentinel monitor kvmaster 127.0.0.1 "
            + masterPort
            + " 1\nsentinel down-after-milliseconds kvmaster 5000\n");
    Process sentinel =
        new ProcessBuilder("redis-server", conf.toString(), "--sentinel")
            .redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.DISCARD)
            .start();
    String sentinelCli = Integer.toString(sentinelPort);
    try {
      Await.until("the sentinel to answer", () -> RedisServers.ping(sentinelPort));
      try (RedisStore s =
          new RedisStore(
              "redis-sentinel://127.0.0.1:" + sentinelPort + "#kvmaster",
              2000,
              0,
              16,
              pool::tryAllocate)) {
        assertTrue(s.connected(), s.errorCounts().toString());
        roundTrip(s); // key (1, 2, 3), bytes 42
        // Replication, the sentinel's discovery of the replica and the failover run on the
        // servers' own schedules; nothing announces them but the state they leave.
        Await.until(
            "the replica to hold the chunk",
            () ->
                RedisServers.run("redis-cli", "-p", Integer.toString(replicaPort), "DBSIZE")
                    .trim()
                    .equals("1"));
        Await.until( // refused until the sentinel knows the replica
            "the sentinel to accept a failover",
            () ->
                RedisServers.run("redis-cli", "-p", sentinelCli, "SENTINEL", "FAILOVER", "kvmaster")
                    .trim()
                    .equals("OK"));
        Await.until(
            "the sentinel to name the replica as master",
            () ->
                RedisServers.run(
                        "redis-cli",
                        "-p",
                        sentinelCli,
                        "SENTINEL",
                        "get-master-addr-by-name",
                        "kvmaster")
                    .contains(Integer.toString(replicaPort)));
        RedisServers.stop(master);
        // A GET reconnects (and asks the sentinel) only after the old connection fails.
        ChunkBuffer got =
            Await.value(
                "a read from the new master",
                () -> s.get(new ChunkKey(1, 2, 3)),
                () -> s.errorCounts().toString());
        byte[] expected = new byte[CHUNK];
        Arrays.fill(expected, (byte) 42);
        assertArrayEquals(expected, got.segment().toArray(ValueLayout.JAVA_BYTE));
        got.release();
      }
    } finally {
      sentinel.destroy();
      sentinel.waitFor(10, TimeUnit.SECONDS);
      RedisServers.stop(master);
      RedisServers.stop(replica);
    }
  }

  @Test
  void stalledServer_memoryStaysBounded() throws Exception {
    int port = RedisServers.freePort();
    Process server = RedisServers.start(port, dir);
    try (RedisStore s = new RedisStore("redis://127.0.0.1:" + port, 100, 0, 8, pool::tryAllocate)) {
      RedisServers.suspend(server); // answers nothing until resumed
      ChunkBuffer b = pool.tryAllocate(CHUNK);
      int accepted = 0;
      for (int i = 0; i < 1000; i++) {
        if (s.put(new ChunkKey(5, i, i), b)) {
          accepted++;
        }
      }
      assertEquals(8, accepted, "puts in flight are bounded by remote_queue");
      assertEquals(1 + 8, b.refCnt(), "the store holds one reference per put in flight, no more");
      b.release();
      ChunkKey[] many = new ChunkKey[2000];
      for (int i = 0; i < many.length; i++) {
        many[i] = new ChunkKey(6, i, i);
      }
      for (int round = 0; round < 4; round++) {
        s.getBatch(many); // each round times out; replies pile up until the bound
      }
      // Rounds 1 and 2 leave 4000 reads outstanding; 3 and 4 would pass the bound of 4096.
      assertEquals(
          2L,
          s.errorCounts().getOrDefault(ErrorKind.BACKLOG, 0L),
          "batches beyond "
              + RedisStore.MAX_IN_FLIGHT_READS
              + " outstanding reads are refused, not queued: "
              + s.errorCounts());
      RedisServers.resume(server);
      assertTrue(s.awaitIdle(60_000), "the held puts are answered once the server runs again");
      assertEquals(8, s.stats().puts());
    } finally {
      RedisServers.stop(server);
    }
  }
}
