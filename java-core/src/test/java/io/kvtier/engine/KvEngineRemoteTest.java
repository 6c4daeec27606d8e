package io.kvtier.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.KvTierConfig;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.remote.redis.RedisServers;
import io.kvtier.testing.Await;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;

/**
 * Two engines (as two vLLM instances) share chunks through one remote store: a real Redis server,
 * and kvtier's own cache server.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class KvEngineRemoteTest {
  static final int CHUNK = 16;
  static final long BYTES_PER_TOKEN = 256;

  Process redis;
  int redisPort;
  io.kvtier.server.CacheServer cacheServer;

  @BeforeAll
  void start() throws Exception {
    cacheServer =
        new io.kvtier.server.CacheServer(
            new io.kvtier.server.CacheServer.Settings(
                "127.0.0.1", 0, 64L << 20, CHUNK * BYTES_PER_TOKEN, null, 0, null, 2));
    if (RedisServers.installed()) { // otherwise the Redis test skips, saying why
      redisPort = RedisServers.freePort();
      redis = RedisServers.start(redisPort, Files.createTempDirectory("redis-engine"));
    }
  }

  @AfterAll
  void stop() throws Exception {
    try {
      RedisServers.stop(redis); // null when not installed or not started
    } finally {
      if (cacheServer != null) {
        cacheServer.close();
      }
    }
  }

  KvEngine open(String url) {
    return new KvEngine(
        KvTierConfig.of(Map.of("chunk_size", CHUNK, "remote_url", url, "local_cpu", true)),
        KvEngineTest.ns(CHUNK),
        BYTES_PER_TOKEN,
        MmapAllocator.INSTANCE);
  }

  @Test
  void throughRedis_secondEngineHitsAndLoadsWhatTheFirstStored() throws Exception {
    RedisServers.assumeInstalled();
    shareThrough("redis://127.0.0.1:" + redisPort);
  }

  @Test
  void throughKvtierServer_secondEngineHitsAndLoadsWhatTheFirstStored() throws Exception {
    shareThrough("kvtier://127.0.0.1:" + cacheServer.port());
  }

  void shareThrough(String url) throws Exception {
    int[] prompt = new Random(5).ints(6 * CHUNK + 3, 0, 150_000).toArray();
    long chunkBytes = CHUNK * BYTES_PER_TOKEN;
    try (Arena arena = Arena.ofShared()) {
      MemorySegment[] src = new MemorySegment[6];
      MemorySegment[] dst = new MemorySegment[6];
      long[] srcAddr = new long[6];
      long[] dstAddr = new long[6];
      Random r = new Random(6);
      for (int c = 0; c < 6; c++) {
        byte[] b = new byte[(int) chunkBytes];
        r.nextBytes(b);
        src[c] = arena.allocate(chunkBytes);
        MemorySegment.copy(b, 0, src[c], ValueLayout.JAVA_BYTE, 0, b.length);
        dst[c] = arena.allocate(chunkBytes);
        srcAddr[c] = src[c].address();
        dstAddr[c] = dst[c].address();
      }
      try (KvEngine a = open(url)) {
        assertEquals(6, a.store(prompt, prompt.length, srcAddr));
        assertTrue(a.tiers().awaitIdle(60_000), "copy-downs or remote puts still in flight");
        assertEquals(6, a.tiers().lowerTiers().get(0).stats().puts(), "chunks reached the server");
      }
      try (KvEngine b = open(url)) { // a fresh CPU tier: everything must come from Redis
        assertEquals(6 * CHUNK, b.lookup(prompt, prompt.length));
        // The scheduler's lookup never waits on the network: it says "pending" until the
        // remote answer is in, and the scheduler asks again on a later step.
        int[] pinned =
            Await.value(
                "the remote answer",
                () -> {
                  int[] t = b.lookupAndPinTiers(1, prompt, prompt.length);
                  return t[3] == 0 ? t : null;
                },
                () -> "still pending");
        assertEquals(6 * CHUNK, pinned[0]);
        assertEquals(0, pinned[4], "none of it in this engine's own tiers");
        b.unpinRequest(1);
        int[] other = prompt.clone();
        other[2 * CHUNK + 1] ^= 1;
        assertEquals(2 * CHUNK, b.lookup(other, other.length), "prefix hits stop at the change");
        assertEquals(6, b.retrieve(prompt, prompt.length, dstAddr));
        for (int c = 0; c < 6; c++) {
          assertEquals(-1, src[c].mismatch(dst[c]), "chunk " + c);
        }
        assertEquals(0, b.pool().inUseSlots() - b.tiers().cpu().stats().entries());
      }
    }
  }

  /**
   * A Redis server that stops answering (SIGSTOP, as a stalled or overloaded server) never stalls a
   * scheduler lookup: the lookup says "pending" while the server is frozen, answers with the remote
   * hit once it replies, and counts an answer past {@code remote_timeout_ms} as a miss.
   */
  @Test
  void stalledRedis_lookupSaysPendingWithoutWaiting_thenHits_andPastTheBoundMisses()
      throws Exception {
    RedisServers.assumeInstalled();
    int port = RedisServers.freePort();
    Process stalled = RedisServers.start(port, Files.createTempDirectory("redis-stalled"));
    String url = "redis://127.0.0.1:" + port;
    int[] prompt = new Random(7).ints(4 * CHUNK, 0, 150_000).toArray();
    int[] other = new Random(8).ints(4 * CHUNK, 0, 150_000).toArray();
    long[] now = {0}; // the engine's clock, advanced by hand
    try {
      long chunkBytes = CHUNK * BYTES_PER_TOKEN;
      try (Arena arena = Arena.ofShared();
          KvEngine a = open(url)) {
        long[] src = new long[4];
        for (int c = 0; c < 4; c++) {
          src[c] = arena.allocate(chunkBytes).fill((byte) (c + 1)).address();
        }
        assertEquals(4, a.store(prompt, prompt.length, src));
        assertEquals(4, a.store(other, other.length, src));
        assertTrue(a.tiers().awaitIdle(60_000), "remote puts still in flight");
      }
      KvTierConfig config =
          KvTierConfig.of(
              Map.of("chunk_size", CHUNK, "remote_url", url, "remote_timeout_ms", 5_000));
      try (KvEngine b =
          new KvEngine(
              config,
              KvEngineTest.ns(CHUNK),
              BYTES_PER_TOKEN,
              MmapAllocator.INSTANCE,
              () -> now[0],
              false)) {
        assertEquals(4 * CHUNK, b.lookup(prompt, prompt.length), "connected, chunks in Redis");
        RedisServers.suspend(stalled);
        try {
          // The server is stopped for the whole call: a lookup that waited on it could only
          // return after remote_timeout_ms, with a miss and pending 0.
          assertArrayEquals(
              new int[] {0, 0, 0, 1, 0}, b.lookupAndPinTiers(1, prompt, prompt.length), "pending");
          assertEquals(1, b.statistics().remoteLookups());
        } finally {
          RedisServers.resume(stalled);
        }
        int[] answered =
            Await.value(
                "the remote answer",
                () -> {
                  int[] r = b.lookupAndPinTiers(2, prompt, prompt.length);
                  return r[3] == 0 ? r : null;
                },
                () -> "still pending");
        assertArrayEquals(
            new int[] {4 * CHUNK, 0, 0, 0, 0}, answered, "the whole prompt in Redis, none local");
        assertEquals(1, b.statistics().remoteLookups(), "asked once, answered on a later call");
        b.unpinRequest(2);
        // Within the bound the answer serves the next lookups of the prompt (a request vLLM
        // could not admit is looked up again): no second question, no step lost to "pending".
        assertArrayEquals(answered, b.lookupAndPinTiers(5, prompt, prompt.length), "reused");
        assertEquals(1, b.statistics().remoteLookups(), "no second question within the bound");
        b.unpinRequest(5);

        RedisServers.suspend(stalled);
        int[] pastBound;
        try {
          assertEquals(1, b.lookupAndPinTiers(3, other, other.length)[3], "pending");
          now[0] += TimeUnit.MILLISECONDS.toNanos(5_001); // no answer within the bound
          pastBound = b.lookupAndPinTiers(4, other, other.length);
        } finally {
          RedisServers.resume(stalled);
        }
        assertArrayEquals(new int[] {0, 0, 0, 0, 0}, pastBound, "past the bound: a miss");
        assertEquals(1, b.statistics().remoteLookupTimeouts());
        long asked = b.statistics().remoteLookups();
        b.lookupAndPinTiers(6, prompt, prompt.length);
        assertEquals(asked + 1, b.statistics().remoteLookups(), "an older answer is asked again");
      }
    } finally {
      RedisServers.stop(stalled);
    }
  }
}
