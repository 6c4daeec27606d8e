package io.kvtier.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.LogCapture;
import io.kvtier.config.ConfigException;
import io.kvtier.config.KvTierConfig;
import io.kvtier.key.KeyNamespace;
import io.kvtier.memory.MmapAllocator;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class KvEngineTest {
  static final int CHUNK = 16;
  static final long BYTES_PER_TOKEN = 64;
  static final long CHUNK_BYTES = CHUNK * BYTES_PER_TOKEN;

  private final Arena arena = Arena.ofShared();
  private KvEngine engine;

  static KeyNamespace ns(int chunk) {
    return new KeyNamespace("test-model", "bfloat16", 2, 2, 8, 1, 0, chunk, false);
  }

  KvEngine open(Map<String, ?> settings) {
    Map<String, Object> s = new java.util.HashMap<>(Map.of("chunk_size", CHUNK));
    s.putAll(settings);
    engine = new KvEngine(KvTierConfig.of(s), ns(CHUNK), BYTES_PER_TOKEN, MmapAllocator.INSTANCE);
    return engine;
  }

  @AfterEach
  void close() {
    if (engine != null) {
      engine.close();
      assertEquals(0, engine.pool().inUseSlots(), "engine leaked slots");
    }
    arena.close();
  }

  static int[] prompt(int n, long seed) {
    return new Random(seed).ints(n, 0, 150_000).toArray();
  }

  /** One caller buffer per chunk, filled with random bytes. */
  MemorySegment[] source(int tokenCount, long seed, boolean partial) {
    int chunks = tokenCount / CHUNK + (partial && tokenCount % CHUNK != 0 ? 1 : 0);
    MemorySegment[] s = new MemorySegment[chunks];
    Random r = new Random(seed);
    for (int c = 0; c < chunks; c++) {
      int tokens = Math.min(CHUNK, tokenCount - c * CHUNK);
      byte[] b = new byte[(int) (tokens * BYTES_PER_TOKEN)];
      r.nextBytes(b);
      s[c] = arena.allocate(b.length);
      MemorySegment.copy(b, 0, s[c], ValueLayout.JAVA_BYTE, 0, b.length);
    }
    return s;
  }

  static long[] addresses(MemorySegment[] s) {
    long[] a = new long[s.length];
    for (int i = 0; i < s.length; i++) {
      a[i] = s[i].address();
    }
    return a;
  }

  MemorySegment[] blank(MemorySegment[] like) {
    MemorySegment[] d = new MemorySegment[like.length];
    for (int i = 0; i < like.length; i++) {
      d[i] = arena.allocate(like[i].byteSize());
    }
    return d;
  }

  @Test
  void storeThenRetrieve_isByteExact_andLookupCountsTokens() {
    open(Map.of());
    int[] p = prompt(5 * CHUNK + 3, 1);
    MemorySegment[] src = source(p.length, 1, false);
    assertEquals(0, engine.lookup(p, p.length));
    assertEquals(5, engine.store(p, p.length, addresses(src)));
    assertEquals(5 * CHUNK, engine.lookup(p, p.length), "chunk-aligned; the tail is not saved");

    MemorySegment[] dst = blank(src);
    assertEquals(5, engine.retrieve(p, p.length, addresses(dst)));
    for (int c = 0; c < 5; c++) {
      assertEquals(-1, src[c].mismatch(dst[c]), "chunk " + c + " differs");
    }
    assertEquals(0, engine.store(p, p.length, addresses(src)), "already stored");
  }

  @Test
  void saveUnfullChunk_storesAndHitsTheWholePrompt() {
    open(Map.of("save_unfull_chunk", true));
    int[] p = prompt(3 * CHUNK + 5, 2);
    MemorySegment[] src = source(p.length, 2, true);
    assertEquals(4, engine.store(p, p.length, addresses(src)));
    assertEquals(p.length, engine.lookup(p, p.length));
    MemorySegment[] dst = blank(src);
    assertEquals(4, engine.retrieve(p, p.length, addresses(dst)));
    assertEquals(-1, src[3].mismatch(dst[3]), "partial chunk round-trips");
    int[] longer = java.util.Arrays.copyOf(p, p.length + 20);
    assertEquals(3 * CHUNK, engine.lookup(longer, longer.length), "a partial chunk is its own key");
  }

  @Test
  void sharedPrefix_hitsOnlyTheSharedChunks() {
    open(Map.of());
    int[] a = prompt(6 * CHUNK, 3);
    int[] b = a.clone();
    b[3 * CHUNK + 1] ^= 0x55; // diverges in chunk 3
    engine.store(a, a.length, addresses(source(a.length, 3, false)));
    assertEquals(3 * CHUNK, engine.lookup(b, b.length));
    assertArrayEquals(
        new int[] {6 * CHUNK, 3 * CHUNK, 0},
        engine.lookupBatch(concat(a, b, prompt(CHUNK, 9)), new int[] {0, 96, 192, 208}));
  }

  static int[] concat(int[]... parts) {
    return java.util.Arrays.stream(parts).flatMapToInt(java.util.Arrays::stream).toArray();
  }

  @Test
  void batchedStoreAndRetrieve_roundTripEveryPrompt() {
    open(Map.of());
    int[] a = prompt(2 * CHUNK, 20);
    int[] b = prompt(3 * CHUNK + 1, 21);
    MemorySegment[] sa = source(a.length, 20, false);
    MemorySegment[] sb = source(b.length, 21, false);
    int[] tokens = concat(a, b);
    int[] offsets = {0, a.length, a.length + b.length};
    MemorySegment[] all = concatSegments(sa, sb);
    assertArrayEquals(new int[] {2, 3}, engine.storeBatch(tokens, offsets, addresses(all)));
    MemorySegment[] dst = blank(all);
    assertArrayEquals(new int[] {2, 3}, engine.retrieveBatch(tokens, offsets, addresses(dst)));
    for (int i = 0; i < all.length; i++) {
      assertEquals(-1, all[i].mismatch(dst[i]), "chunk " + i);
    }
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class,
            () -> engine.retrieveBatch(tokens, offsets, new long[4]));
    assertEquals("dstAddresses has 4 entries for 5 chunks in the batch", e.getMessage());
  }

  static MemorySegment[] concatSegments(MemorySegment[] a, MemorySegment[] b) {
    MemorySegment[] out = java.util.Arrays.copyOf(a, a.length + b.length);
    System.arraycopy(b, 0, out, a.length, b.length);
    return out;
  }

  @Test
  void prepareStore_isInvisibleUntilCompleted_andFailedStoreLeavesNothing() {
    open(Map.of());
    int[] p = prompt(2 * CHUNK, 4);
    long[] h = engine.prepareStore(p, p.length, 0);
    assertEquals(3, h.length);
    MemorySegment.copy(
        source(p.length, 4, false)[0],
        0,
        io.kvtier.memory.HostMemory.view(h[1], CHUNK_BYTES),
        0,
        CHUNK_BYTES);
    assertEquals(0, engine.lookup(p, p.length), "nothing visible before completeStore");
    assertEquals(0, engine.completeStore(h[0], false));
    assertEquals(0, engine.lookup(p, p.length), "a failed store leaves nothing visible");
    assertEquals(0, engine.pool().inUseSlots());

    long[] h2 = engine.prepareStore(p, p.length, 1);
    assertEquals(0, h2[1], "skipped chunk gets no buffer");
    assertNotEquals(0, h2[2]);
    assertEquals(1, engine.completeStore(h2[0], true));
    assertEquals(0, engine.lookup(p, p.length), "chunk 1 without chunk 0 is not a prefix hit");
    assertThrows(IllegalArgumentException.class, () -> engine.completeStore(h2[0], true));
  }

  @Test
  void prepareLoad_keepsChunksAliveThroughEviction() {
    // 4 slots, LRU: p's chunks are the eldest once the churn starts, so they are evicted first.
    open(Map.of("max_local_cpu_size", 4.0 * 4096 / (1L << 30), "cache_policy", "LRU"));
    int[] p = prompt(2 * CHUNK, 5);
    MemorySegment[] src = source(p.length, 5, false);
    engine.store(p, p.length, addresses(src));
    long[] load = engine.prepareLoad(p, p.length, 99);
    assertEquals(3, load.length);
    for (int i = 0; i < 8; i++) { // churn: evicts p's chunks from the index
      int[] q = prompt(2 * CHUNK, 100 + i);
      engine.store(q, q.length, addresses(source(q.length, 100 + i, false)));
    }
    assertEquals(0, engine.lookup(p, p.length), "the churn evicted p's chunks from the index");
    MemorySegment held = io.kvtier.memory.HostMemory.view(load[1], CHUNK_BYTES);
    assertEquals(-1, src[0].mismatch(held), "bytes under a load never change");
    engine.completeLoad(load[0]);
  }

  @Test
  void exhaustedPool_dropsStores_andLookupsMiss() {
    open(Map.of("max_local_cpu_size", 2.0 * 4096 / (1L << 30))); // 2 slots
    int[] p = prompt(2 * CHUNK, 6);
    long[] pinHold = engine.prepareStore(p, p.length, 0); // both slots held, never completed
    int[] q = prompt(2 * CHUNK, 7);
    assertEquals(0, engine.store(q, q.length, addresses(source(q.length, 7, false))));
    assertEquals(0, engine.lookup(q, q.length));
    assertTrue(engine.pool().allocationFailures() > 0);
    engine.completeStore(pinHold[0], false);
  }

  @Test
  void lookupAndPin_protectsChunksUntilUnpinned() {
    open(Map.of("max_local_cpu_size", 4.0 * 4096 / (1L << 30), "cache_policy", "LRU"));
    int[] p = prompt(2 * CHUNK, 8);
    engine.store(p, p.length, addresses(source(p.length, 8, false)));
    assertEquals(2 * CHUNK, engine.lookupAndPin(77, p, p.length));
    for (int i = 0; i < 6; i++) {
      int[] q = prompt(2 * CHUNK, 200 + i);
      engine.store(q, q.length, addresses(source(q.length, 200 + i, false)));
    }
    assertEquals(2 * CHUNK, engine.lookup(p, p.length), "pinned chunks survive churn");
    engine.unpinRequest(77);
    engine.unpinRequest(77); // idempotent
    for (int i = 0; i < 6; i++) {
      int[] q = prompt(2 * CHUNK, 300 + i);
      engine.store(q, q.length, addresses(source(q.length, 300 + i, false)));
    }
    assertEquals(0, engine.lookup(p, p.length), "unpinned chunks can be evicted again");
  }

  @Test
  void expiredPins_areReleased_andCounted() {
    long[] now = {0};
    engine =
        new KvEngine(
            KvTierConfig.of(
                Map.of(
                    "chunk_size",
                    CHUNK,
                    "max_local_cpu_size",
                    4.0 * 4096 / (1L << 30),
                    "cache_policy",
                    "LRU",
                    "pin_timeout_sec",
                    10)),
            ns(CHUNK),
            BYTES_PER_TOKEN,
            MmapAllocator.INSTANCE,
            () -> now[0],
            false);
    int[] p = prompt(2 * CHUNK, 40);
    engine.store(p, p.length, addresses(source(p.length, 40, false)));
    assertEquals(2 * CHUNK, engine.lookupAndPin(5, p, p.length));
    now[0] = 9_000_000_000L;
    assertEquals(0, engine.expirePins(), "not yet expired");
    now[0] = 11_000_000_000L;
    assertEquals(1, engine.expirePins());
    assertEquals(0, engine.expirePins(), "released once");
    int expired = java.util.Arrays.asList(KvEngine.statNames()).indexOf("expired_pins");
    assertEquals(1, engine.stats()[expired]);
    for (int i = 0; i < 6; i++) { // the chunks can be evicted again
      int[] q = prompt(2 * CHUNK, 400 + i);
      engine.store(q, q.length, addresses(source(q.length, 400 + i, false)));
    }
    assertEquals(0, engine.lookup(p, p.length));
    engine.unpinRequest(5); // late unpin of an expired request is harmless
  }

  @Test
  void badArguments_throwClearly() {
    open(Map.of());
    int[] p = prompt(3 * CHUNK, 9);
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class, () -> engine.store(p, p.length, new long[] {1, 2}));
    assertEquals("srcAddresses has 2 entries for a prompt of 3 chunks", e.getMessage());
    assertThrows(IllegalArgumentException.class, () -> engine.lookup(p, p.length + 1));
    assertThrows(IllegalArgumentException.class, () -> engine.completeLoad(12345));
    assertThrows(IllegalArgumentException.class, () -> engine.lookupBatch(p, new int[] {0, 10, 5}));
    assertEquals(0, engine.pool().inUseSlots(), "a refused store holds nothing");
  }

  @Test
  void afterClose_everyCallThrows() {
    open(Map.of());
    engine.close();
    int[] p = prompt(CHUNK, 1);
    assertThrows(IllegalStateException.class, () -> engine.lookup(p, p.length));
    assertThrows(IllegalStateException.class, () -> engine.prepareStore(p, p.length, 0));
    assertThrows(IllegalStateException.class, () -> engine.prepareLoad(p, p.length, 1));
  }

  @Test
  void constructor_rejectsMismatchedChunkSize() {
    assertThrows(
        IllegalArgumentException.class,
        () -> new KvEngine(KvTierConfig.of(Map.of()), ns(CHUNK), 64, MmapAllocator.INSTANCE));
  }

  @Test
  void diskTier_survivesRestart_andLoadsByteExact(
      @org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
    Map<String, Object> disk = Map.of("local_disk", "file://" + dir, "max_local_disk_size", 0.01);
    int[] p = prompt(4 * CHUNK, 30);
    MemorySegment[] src = source(p.length, 30, false);
    open(disk);
    assertEquals(4, engine.store(p, p.length, addresses(src)));
    awaitDiskPuts(4);
    engine.close();
    engine = null;

    open(disk); // a new process would do the same: the index comes back from the files
    assertEquals(4 * CHUNK, engine.lookup(p, p.length), "hits survive a restart");
    MemorySegment[] dst = blank(src);
    assertEquals(4, engine.retrieve(p, p.length, addresses(dst)));
    for (int c = 0; c < 4; c++) {
      assertEquals(-1, src[c].mismatch(dst[c]), "chunk " + c);
    }
  }

  @Test
  void localCpuFalse_stagesInCpuOnly_andServesFromDisk(
      @org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
    open(Map.of("local_disk", dir.toString(), "max_local_disk_size", 0.01, "local_cpu", false));
    int[] p = prompt(3 * CHUNK, 31);
    MemorySegment[] src = source(p.length, 31, false);
    engine.store(p, p.length, addresses(src));
    awaitDiskPuts(3); // the copy-downs that leave the CPU tier are done too
    assertEquals(0, engine.tiers().cpu().stats().entries(), "the CPU tier only stages");
    assertEquals(3 * CHUNK, engine.lookup(p, p.length));
    MemorySegment[] dst = blank(src);
    assertEquals(3, engine.retrieve(p, p.length, addresses(dst)));
    assertEquals(-1, src[2].mismatch(dst[2]));
  }

  @Test
  void prefetch_bringsDiskOnlyChunksBackIntoCpu(
      @org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
    open(Map.of("local_disk", dir.toString(), "max_local_disk_size", 0.01));
    int[] p = prompt(3 * CHUNK, 32);
    MemorySegment[] src = source(p.length, 32, false);
    engine.store(p, p.length, addresses(src));
    awaitDiskPuts(3);
    ChunkKeyList keys = new ChunkKeyList(p);
    keys.forEach(k -> engine.tiers().cpu().remove(k)); // as if evicted from memory
    assertEquals(3, engine.prefetch(p, p.length));
    assertTrue(engine.tiers().awaitIdle(60_000), "prefetches still running");
    assertTrue(keys.all(k -> engine.tiers().cpu().contains(k)), "prefetch did not promote");
    assertEquals(0, engine.prefetch(p, p.length), "nothing left to prefetch");
    MemorySegment[] dst = blank(src);
    assertEquals(3, engine.retrieve(p, p.length, addresses(dst)));
    assertEquals(-1, src[1].mismatch(dst[1]));
  }

  @Test
  void clearLocal_emptiesCpuAndDisk_evenPinnedChunks_andSurvivesNoRestart(
      @org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
    Map<String, Object> disk = Map.of("local_disk", dir.toString(), "max_local_disk_size", 0.01);
    open(disk);
    int[] p = prompt(3 * CHUNK, 33);
    MemorySegment[] src = source(p.length, 33, false);
    engine.store(p, p.length, addresses(src));
    awaitDiskPuts(3);
    assertEquals(3 * CHUNK, engine.lookupAndPin(5, p, p.length));
    long[] held = engine.prepareLoad(p, p.length, 3); // a load already holding its chunks

    assertEquals(6, engine.clearLocal(), "3 chunks in memory and 3 on disk");
    assertEquals(0, engine.lookup(p, p.length));
    MemorySegment[] dst = blank(src);
    io.kvtier.memory.HostMemory.copy(held[2], dst[1].address(), CHUNK_BYTES);
    assertEquals(-1, src[1].mismatch(dst[1]), "a load holding a chunk reads it whole");
    engine.completeLoad(held[0]);
    assertTrue(engine.tiers().awaitIdle(60_000), "file deletions still running");
    engine.close();
    engine = null;
    open(disk);
    assertEquals(0, engine.lookup(p, p.length), "the files are gone, not just the index");
  }

  @Test
  void aTierThatCannotStart_leavesNothingMapped(
      @org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
    java.nio.file.Path notADirectory = java.nio.file.Files.createFile(dir.resolve("file"));
    java.util.concurrent.atomic.AtomicLong mapped = new java.util.concurrent.atomic.AtomicLong();
    java.util.concurrent.atomic.AtomicLong maps = new java.util.concurrent.atomic.AtomicLong();
    io.kvtier.memory.HostAllocator counting =
        new io.kvtier.memory.HostAllocator() {
          @Override
          public MemorySegment allocate(long byteCount) {
            maps.incrementAndGet();
            mapped.addAndGet(byteCount);
            return MmapAllocator.INSTANCE.allocate(byteCount);
          }

          @Override
          public void free(MemorySegment segment) {
            mapped.addAndGet(-segment.byteSize());
            MmapAllocator.INSTANCE.free(segment);
          }

          @Override
          public String name() {
            return "counting";
          }
        };
    Map<String, Object> s =
        Map.of(
            "chunk_size",
            CHUNK,
            "local_disk",
            notADirectory.toString(),
            "max_local_disk_size",
            0.01);
    assertThrows(
        RuntimeException.class,
        () -> new KvEngine(KvTierConfig.of(s), ns(CHUNK), BYTES_PER_TOKEN, counting));
    assertTrue(maps.get() > 0, "the pool mapped its first slab before the disk tier failed");
    assertEquals(0, mapped.get(), "slabs left mapped");
  }

  @Test
  void keyExtras_keepPromptsApart_andTheSameExtrasHit() {
    open(Map.of());
    int[] p = prompt(3 * CHUNK, 34);
    MemorySegment[] src = source(p.length, 34, false);
    io.kvtier.key.KeyExtras lora = io.kvtier.key.KeyExtras.of(new long[] {0, 0, 11, 12});
    long[] prepared = engine.prepareStore(p, p.length, lora, 0);
    for (int c = 0; c < 3; c++) {
      io.kvtier.memory.HostMemory.copy(src[c].address(), prepared[1 + c], CHUNK_BYTES);
    }
    assertEquals(3, engine.completeStore(prepared[0], true));
    assertEquals(0, engine.lookup(p, p.length), "the plain prompt does not hit the adapter's KV");
    assertEquals(3 * CHUNK, engine.lookup(p, p.length, lora));
    assertEquals(
        0, engine.lookup(p, p.length, io.kvtier.key.KeyExtras.of(new long[] {0, 0, 11, 13})));
    assertEquals(
        3 * CHUNK, engine.lookupAndPinTiers(9, p, p.length, lora)[0], "pinning lookups agree");
    long[] load = engine.prepareLoad(p, p.length, lora, 1, 3);
    assertEquals(3, load.length, "chunks 1 and 2");
    MemorySegment got = arena.allocate(CHUNK_BYTES);
    io.kvtier.memory.HostMemory.copy(load[2], got.address(), CHUNK_BYTES);
    assertEquals(-1, src[2].mismatch(got));
    engine.completeLoad(load[0]);
    engine.unpinRequest(9);
  }

  /** The keys of a prompt in the test namespace. */
  record ChunkKeyList(java.util.List<io.kvtier.key.ChunkKey> keys) {
    ChunkKeyList(int[] p) {
      this(
          java.util.List.of(
              io.kvtier.key.ChunkHasher.keys(ns(CHUNK).id(), p, p.length, CHUNK, false, 99)));
    }

    void forEach(java.util.function.Consumer<io.kvtier.key.ChunkKey> c) {
      keys.forEach(c);
    }

    boolean all(java.util.function.Predicate<io.kvtier.key.ChunkKey> t) {
      return keys.stream().allMatch(t);
    }
  }

  /** Waits for the engine's background writes, then checks {@code n} chunks reached the disk. */
  private void awaitDiskPuts(long n) throws InterruptedException {
    int diskPuts = java.util.Arrays.asList(KvEngine.statNames()).indexOf("disk_puts");
    assertTrue(engine.tiers().awaitIdle(60_000), "copy-downs or disk writes still running");
    assertEquals(
        n,
        engine.stats()[diskPuts],
        "chunks never reached the disk: " + java.util.Arrays.toString(engine.stats()));
  }

  @Test
  void stats_countLookupsHitsAndStores() {
    open(Map.of());
    int[] p = prompt(2 * CHUNK, 10);
    engine.store(p, p.length, addresses(source(p.length, 10, false)));
    engine.lookup(p, p.length);
    long[] s = engine.stats();
    String[] names = KvEngine.statNames();
    assertEquals(names.length, s.length);
    Map<String, Long> m = new java.util.HashMap<>();
    for (int i = 0; i < names.length; i++) {
      m.put(names[i], s[i]);
    }
    assertEquals(2L * CHUNK, m.get("hit_tokens"));
    assertEquals(2L, m.get("puts"));
    assertEquals(2L, m.get("entries"));
    assertEquals(2 * CHUNK_BYTES, m.get("bytes"));
  }

  /** A loopback port nothing listens on (bound, then closed). */
  static int closedPort() throws java.io.IOException {
    try (java.net.ServerSocket s = new java.net.ServerSocket(0)) {
      return s.getLocalPort();
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"redis://user:hunter2@127.0.0.1:%d", "kvtier://:hunter2@127.0.0.1:%d"})
  void open_remoteUrlWithPassword_startUpLogShowsItMasked(String form) throws Exception {
    String url = form.formatted(closedPort());
    try (LogCapture log = new LogCapture()) {
      open(Map.of("remote_url", url, "remote_timeout_ms", 200));
      engine.close();
      String text = log.text();
      assertTrue(text.contains("kvtier configuration:"), text);
      assertTrue(text.contains(":***@127.0.0.1:"), text);
      assertFalse(text.contains("hunter2"), text);
    }
  }

  @Test
  void lmcacheSettings_areLoggedOnce_atTheirLevel_byTheFirstRankOnly() {
    KvTierConfig config =
        KvTierConfig.of(Map.of("chunk_size", CHUNK, "enable_p2p", true, "p2p_host", "h"));
    for (int rank = 0; rank < 2; rank++) {
      KeyNamespace namespace =
          new KeyNamespace("test-model", "bfloat16", 2, 2, 8, 2, rank, CHUNK, false);
      try (LogCapture log = new LogCapture()) {
        new KvEngine(config, namespace, 64, MmapAllocator.INSTANCE).close();
        List<String> p2p =
            log.records().stream().filter(r -> r.contains("LMCache's enable_p2p=true")).toList();
        List<String> host =
            log.records().stream().filter(r -> r.contains("LMCache's p2p_host=h")).toList();
        if (rank == 0) {
          assertEquals(1, p2p.size(), log.text());
          assertTrue(p2p.get(0).startsWith("WARNING io.kvtier.engine.KvEngine: "), p2p.get(0));
          assertEquals(1, host.size(), log.text());
          assertTrue(host.get(0).startsWith("INFO "), host.get(0));
        } else {
          assertEquals(List.of(), p2p, "rank 1 repeats nothing");
        }
        assertTrue(log.text().contains("kvtier configuration:"), "each rank logs its settings");
      }
    }
  }

  @ParameterizedTest
  @ValueSource(
      strings = {
        "redis://user:hunter2@[bad",
        "kvtier://:hunter2@bad host:7070",
        "kvtier://:hunter2@cache-host"
      })
  void open_malformedRemoteUrlWithPassword_errorMasksIt(String url) {
    ConfigException e = assertThrows(ConfigException.class, () -> open(Map.of("remote_url", url)));
    assertFalse(e.getMessage().contains("hunter2"), e.getMessage());
    assertTrue(e.getMessage().contains("remote_url="), e.getMessage());
  }
}
