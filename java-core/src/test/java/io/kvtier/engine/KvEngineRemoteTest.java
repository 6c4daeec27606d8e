package io.kvtier.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.kvtier.config.KvTierConfig;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.remote.RedisServers;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;

/** Two engines (as two vLLM instances) share chunks through one real Redis server. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class KvEngineRemoteTest {
  static final int CHUNK = 16;
  static final long BYTES_PER_TOKEN = 256;

  Process server;
  int port;

  @BeforeAll
  void start() throws Exception {
    RedisServers.assumeInstalled();
    port = RedisServers.freePort();
    server = RedisServers.start(port, Files.createTempDirectory("redis-engine"));
  }

  @AfterAll
  void stop() throws Exception {
    RedisServers.stop(server);
  }

  KvEngine open() {
    return new KvEngine(
        KvTierConfig.of(
            Map.of(
                "chunk_size", CHUNK, "remote_url", "redis://127.0.0.1:" + port, "local_cpu", true)),
        KvEngineTest.ns(CHUNK),
        BYTES_PER_TOKEN,
        MmapAllocator.INSTANCE);
  }

  @Test
  void secondEngine_hitsAndLoadsWhatTheFirstStored() throws Exception {
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
      try (KvEngine a = open()) {
        assertEquals(6, a.store(prompt, prompt.length, srcAddr));
        for (int i = 0; i < 500 && a.tiers().lowerTiers().get(0).stats().puts() < 6; i++) {
          Thread.sleep(5);
        }
        assertEquals(6, a.tiers().lowerTiers().get(0).stats().puts(), "chunks reached Redis");
      }
      try (KvEngine b = open()) { // a fresh CPU tier: everything must come from Redis
        assertEquals(6 * CHUNK, b.lookup(prompt, prompt.length));
        assertEquals(6 * CHUNK, b.lookupAndPin(1, prompt, prompt.length));
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
}
