package io.kvtier.server;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.remote.server.ServerStore;
import io.kvtier.store.ErrorKind;
import io.kvtier.testing.Await;
import io.kvtier.wire.Protocol;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.foreign.ValueLayout;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The cache server's protocol guards, eviction, spill, and the client's behaviour on faults. */
class CacheServerTest {
  static final int CHUNK = 64 * 1024;

  ChunkPool pool;

  @BeforeEach
  void setUp() {
    pool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK, 64L * CHUNK, 1 << 22);
  }

  @AfterEach
  void tearDown() throws Exception {
    // Every store is closed by now; a reply still landing on an event loop releases its buffer.
    Await.until(
        "client buffers to be released",
        () -> pool.inUseSlots() == 0,
        () -> "a client buffer leaked: " + pool.inUseSlots() + " in use");
    pool.close();
  }

  static CacheServer server(int port, long memoryChunks, Path disk, String secret)
      throws InterruptedException {
    return new CacheServer(
        new CacheServer.Settings(
            "127.0.0.1",
            port,
            memoryChunks * CHUNK,
            CHUNK,
            disk,
            disk == null ? 0 : 64L * CHUNK * 2,
            secret == null ? null : secret.getBytes(),
            2));
  }

  ServerStore client(String url) {
    return new ServerStore(url, 500, 64, CHUNK, pool::tryAllocate);
  }

  @Test
  void aPromptOfMoreKeysThanOneFrameHolds_isAskedAndFetchedFrameByFrame() throws Exception {
    int small = 256;
    int n = Protocol.MAX_BATCH + 10;
    long budget = 2L * n * 4096; // slots are strided to 4 KiB
    ChunkKey[] keys = new ChunkKey[n];
    for (int i = 0; i < n; i++) {
      keys[i] = new ChunkKey(5, i, i);
    }
    try (ChunkPool values = new ChunkPool(MmapAllocator.INSTANCE, small, budget, 1 << 24);
        CacheServer srv =
            new CacheServer(
                new CacheServer.Settings("127.0.0.1", 0, budget, small, null, 0, null, 2))) {
      try (ServerStore s =
          new ServerStore(
              "kvtier://127.0.0.1:" + srv.port(), 10_000, 2 * n, small, values::tryAllocate)) {
        for (int i = 0; i < n; i++) {
          if (i == Protocol.MAX_BATCH + 5) {
            continue; // a hole in the second frame
          }
          ChunkBuffer b = values.tryAllocate(small);
          b.segment().fill((byte) i);
          assertTrue(s.put(keys[i], b));
          b.release();
        }
        assertTrue(s.awaitIdle(60_000), "puts never acknowledged");
        assertEquals(Protocol.MAX_BATCH + 5, s.prefixLength(keys), "asked past the first frame");
        ChunkBuffer[] got = s.getBatch(keys);
        for (int i = 0; i < n; i++) {
          if (i == Protocol.MAX_BATCH + 5) {
            assertNull(got[i]);
            continue;
          }
          assertNotNull(got[i], "chunk " + i);
          assertEquals((byte) i, got[i].segment().get(ValueLayout.JAVA_BYTE, small - 1));
          got[i].release();
        }
        assertTrue(s.connected(), "no frame was refused: the connection stayed up");
      }
    }
  }

  @Test
  void valuesOfAnySize_shareTheMemory_notOneSlotOfTheLargestEach() throws Exception {
    long mib = 1 << 20;
    long budget = 64 * mib;
    try (ChunkPool small = new ChunkPool(MmapAllocator.INSTANCE, mib / 2, 4 * mib, 4 * mib);
        ChunkPool large = new ChunkPool(MmapAllocator.INSTANCE, 3 * mib, 12 * mib, 12 * mib);
        CacheServer srv =
            new CacheServer(
                new CacheServer.Settings("127.0.0.1", 0, budget, 64 * mib, null, 0, null, 2))) {
      try (ServerStore s =
          new ServerStore(
              "kvtier://127.0.0.1:" + srv.port(),
              10_000,
              256,
              64 * mib,
              n -> (n <= mib / 2 ? small : large).tryAllocate(n))) {
        for (int i = 0; i < 128; i++) { // a 64 MiB server with 64 MiB values holds 128 of 512 KiB
          ChunkBuffer b = small.tryAllocate(mib / 2);
          b.segment().fill((byte) i);
          assertTrue(s.put(new ChunkKey(7, i, i), b));
          b.release();
          if (i % 4 == 3) {
            assertTrue(s.awaitIdle(60_000));
          }
        }
        assertTrue(s.awaitIdle(60_000));
        assertEquals(128, srv.store().cpu().stats().entries(), "every 512 KiB value kept");
        for (int i = 0; i < 4; i++) { // then larger values take memory the smaller ones free
          ChunkBuffer b = large.tryAllocate(3 * mib);
          b.segment().fill((byte) (100 + i));
          assertTrue(s.put(new ChunkKey(8, i, i), b));
          b.release();
          assertTrue(s.awaitIdle(60_000));
        }
        for (int i = 0; i < 4; i++) {
          ChunkBuffer got = s.get(new ChunkKey(8, i, i));
          assertNotNull(got, "large value " + i);
          assertEquals(3 * mib, got.length());
          assertEquals((byte) (100 + i), got.segment().get(ValueLayout.JAVA_BYTE, 3 * mib - 1));
          got.release();
        }
        long held = srv.store().cpu().stats().bytes();
        assertTrue(held <= budget && held >= budget - 3 * mib, "memory kept: " + held);
      }
    }
  }

  static ChunkKey key(int i) {
    return new ChunkKey(3, i, i);
  }

  /** Puts chunk i and waits until the server has acknowledged it. */
  void put(ServerStore s, int i) throws InterruptedException {
    ChunkBuffer b = pool.tryAllocate(CHUNK);
    b.segment().fill((byte) i);
    assertTrue(s.put(key(i), b));
    b.release();
    assertTrue(s.awaitIdle(60_000), "the put was never acknowledged");
  }

  void assertHolds(ServerStore s, int i) {
    ChunkBuffer got = s.get(key(i));
    assertNotNull(got, "chunk " + i);
    byte[] expected = new byte[CHUNK];
    java.util.Arrays.fill(expected, (byte) i);
    assertArrayEquals(expected, got.segment().toArray(ValueLayout.JAVA_BYTE));
    got.release();
  }

  @Test
  void twoClients_shareChunks() throws Exception {
    try (CacheServer srv = server(0, 32, null, null);
        ServerStore a = client("kvtier://127.0.0.1:" + srv.port());
        ServerStore b = client("kvtier://127.0.0.1:" + srv.port())) {
      put(a, 1);
      assertTrue(b.contains(key(1)));
      assertHolds(b, 1);
    }
  }

  @Test
  void memoryBudget_evicts_andDiskSpillKeepsEvictedChunks(@TempDir Path disk) throws Exception {
    try (CacheServer srv = server(0, 4, disk, null);
        ServerStore c = client("kvtier://127.0.0.1:" + srv.port())) {
      for (int i = 0; i < 12; i++) {
        put(c, i);
        // A chunk's slot stays taken until its disk write is done; with all four slots waiting
        // for the disk the server would drop the next put (bounded memory). Let each spill land.
        assertTrue(srv.store().awaitIdle(60_000), "the server's copy-down to disk did not finish");
      }
      assertEquals(12, srv.store().lowerTiers().get(0).stats().puts(), "every chunk spilled");
      assertEquals(0, c.stats().droppedPuts(), "the server took every put");
      assertTrue(srv.store().cpu().stats().entries() <= 4, "memory budget holds");
      assertTrue(srv.store().cpu().stats().evictions() >= 8, "12 chunks in 4 slots: evicted");
      for (int i = 0; i < 12; i++) {
        assertHolds(c, i); // evicted from memory, served from the server's disk
      }
    }
  }

  @Test
  void wrongSecret_isRefused_andCountsAsUnavailable() throws Exception {
    try (CacheServer srv = server(0, 8, null, "s3cret");
        ServerStore bad = client("kvtier://:nope@127.0.0.1:" + srv.port());
        ServerStore good = client("kvtier://:s3cret@127.0.0.1:" + srv.port())) {
      assertFalse(bad.connected());
      assertTrue(
          bad.errorCounts().containsKey(ErrorKind.UNAVAILABLE), bad.errorCounts().toString());
      ChunkBuffer b = pool.tryAllocate(CHUNK);
      assertFalse(bad.put(key(1), b));
      b.release();
      assertNull(bad.get(key(1)));
      assertTrue(good.connected());
      put(good, 2);
      assertHolds(good, 2);
    }
  }

  /** Sends raw bytes and returns the server's first reply frame's op (or -1 if it closed). */
  static int rawExchange(int port, byte[] bytes) throws Exception {
    try (Socket s = new Socket("127.0.0.1", port)) {
      s.setSoTimeout(3000);
      s.getOutputStream().write(bytes);
      DataInputStream in = new DataInputStream(s.getInputStream());
      byte[] head = new byte[9];
      try {
        in.readFully(head);
      } catch (java.io.EOFException e) {
        return -1;
      }
      int op = head[4];
      // the server closes after an ERROR
      return op;
    }
  }

  static byte[] frame(byte op, int id, byte[] payload) {
    ByteBuffer b = ByteBuffer.allocate(9 + payload.length).order(ByteOrder.LITTLE_ENDIAN);
    b.putInt(5 + payload.length).put(op).putInt(id).put(payload);
    return b.array();
  }

  @Test
  void badPeers_getAnError_andTheServerKeepsServing() throws Exception {
    try (CacheServer srv = server(0, 8, null, null);
        ServerStore c = client("kvtier://127.0.0.1:" + srv.port())) {
      // GET before HELLO
      assertEquals(Protocol.ERROR, rawExchange(srv.port(), frame(Protocol.GET, 1, new byte[2])));
      // wrong protocol version
      ByteBuffer hello = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
      hello.putInt(Protocol.MAGIC).putShort((short) 99).putShort((short) 0);
      assertEquals(
          Protocol.ERROR, rawExchange(srv.port(), frame(Protocol.HELLO, 1, hello.array())));
      // garbage
      assertEquals(
          Protocol.ERROR, rawExchange(srv.port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n".getBytes()));
      // a value larger than the server's slots
      ByteBuffer ok = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
      ok.putInt(Protocol.MAGIC).putShort((short) Protocol.VERSION).putShort((short) 0);
      ByteBuffer huge = ByteBuffer.allocate(9 + 24).order(ByteOrder.LITTLE_ENDIAN);
      huge.putInt(5 + 24 + CHUNK * 4).put(Protocol.PUT).putInt(2).put(new byte[24]);
      byte[] both = new byte[17 + 8 + 33];
      System.arraycopy(frame(Protocol.HELLO, 1, ok.array()), 0, both, 0, 17);
      System.arraycopy(huge.array(), 0, both, 17, 33);
      try (Socket s = new Socket("127.0.0.1", srv.port())) {
        s.setSoTimeout(3000);
        s.getOutputStream().write(both, 0, 17 + 33);
        DataInputStream in = new DataInputStream(s.getInputStream());
        byte[] head = new byte[9];
        in.readFully(head);
        assertEquals(Protocol.HELLO_OK, head[4]);
        in.readFully(new byte[2]);
        in.readFully(head);
        assertEquals(Protocol.ERROR, head[4], "an oversize value is refused");
      }
      assertEquals(4, srv.counters().protocolErrors.sum(), "every bad peer counted");
      put(c, 5); // the server is unharmed
      assertHolds(c, 5);
    }
  }

  @Test
  void serverAbsent_thenStarted_thenKilled_thenRestarted() throws Exception {
    int port;
    try (ServerSocket probe = new ServerSocket(0)) {
      port = probe.getLocalPort();
    }
    try (ServerStore c = client("kvtier://127.0.0.1:" + port)) {
      assertFalse(c.connected());
      assertNull(c.get(key(1)));
      CacheServer srv = server(port, 8, null, null);
      try {
        // The store reconnects with back-off on its own schedule: nothing to wait on.
        Await.until("the client to connect", c::connected);
        put(c, 1);
        assertHolds(c, 1);
      } finally {
        srv.close(); // killed
      }
      try {
        Await.until("the client to see the connection closed", () -> !c.connected());
      } catch (AssertionError e) { // rare in CI: say whether something else took the port
        throw new AssertionError(e.getMessage() + "; " + listener(port), e);
      }
      assertNull(c.get(key(1)), "a dead server is a miss");
      ChunkBuffer b = pool.tryAllocate(CHUNK);
      assertFalse(c.put(key(2), b));
      b.release();
      try (CacheServer again = server(port, 8, null, null)) {
        assertEquals(port, again.port());
        Await.until("the client to reconnect", c::connected);
        put(c, 3);
        assertHolds(c, 3);
      }
    }
  }

  /** Whether something listens on {@code port} of the loopback address now, for a message. */
  private static String listener(int port) {
    try (Socket s = new Socket("127.0.0.1", port)) {
      return "something listens on port " + port + " (local end " + s.getLocalPort() + ")";
    } catch (IOException e) {
      return "nothing listens on port " + port + " (" + e.getMessage() + ")";
    }
  }

  @Test
  void stalledServer_timesOutAsMisses() throws Exception {
    try (ServerSocket stall = new ServerSocket(0)) {
      Thread t =
          new Thread(
              () -> {
                try (Socket s = stall.accept()) {
                  InputStream in = s.getInputStream();
                  OutputStream out = s.getOutputStream();
                  byte[] head = new byte[9];
                  new DataInputStream(in).readFully(head);
                  int len = ByteBuffer.wrap(head).order(ByteOrder.LITTLE_ENDIAN).getInt();
                  new DataInputStream(in).readFully(new byte[len - 5]);
                  int id = ByteBuffer.wrap(head, 5, 4).order(ByteOrder.LITTLE_ENDIAN).getInt();
                  ByteBuffer ok = ByteBuffer.allocate(11).order(ByteOrder.LITTLE_ENDIAN);
                  ok.putInt(7).put(Protocol.HELLO_OK).putInt(id).putShort((short) 1);
                  out.write(ok.array());
                  in.transferTo(OutputStream.nullOutputStream()); // then answer nothing
                } catch (Exception ignored) {
                  // the test is over
                }
              });
      t.setDaemon(true);
      t.start();
      try (ServerStore c = client("kvtier://127.0.0.1:" + stall.getLocalPort())) {
        assertTrue(c.connected());
        // The peer never answers, so a get that waited for its reply would not return at all.
        assertTimeoutPreemptively(
            Duration.ofSeconds(60), () -> assertNull(c.get(key(1))), "the get gave up");
        assertEquals(
            1L, c.errorCounts().getOrDefault(ErrorKind.TIMEOUT, 0L), c.errorCounts().toString());
        assertFalse(c.contains(key(1)));
        assertEquals(
            2L, c.errorCounts().getOrDefault(ErrorKind.TIMEOUT, 0L), "EXISTS timed out too");
        for (int i = 0; i < 5; i++) {
          c.getBatch(new ChunkKey[] {key(i), key(i + 100)});
        }
        assertEquals(
            0, c.pendingRequests(), "requests a silent server never answers are forgotten");
      }
    }
  }

  /**
   * A GET that finds the worker queue full is answered at once with misses (not left to time out)
   * and counted by the server; the request queued before it is served once a worker is free.
   */
  @Test
  void fullWorkerQueue_answersAGetWithMissesAtOnce_andCountsIt() throws Exception {
    CountDownLatch busy = new CountDownLatch(1);
    CountDownLatch free = new CountDownLatch(1);
    ExecutorService workers = CacheServer.newWorkers(1, 1);
    workers.execute(
        () -> {
          busy.countDown();
          try {
            free.await();
          } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
          }
        });
    assertTrue(busy.await(60, TimeUnit.SECONDS));
    try (CacheServer srv =
            new CacheServer(
                new CacheServer.Settings("127.0.0.1", 0, 8L * CHUNK, CHUNK, null, 0, null, 1),
                workers);
        ServerStore c =
            new ServerStore(
                "kvtier://127.0.0.1:" + srv.port(), 60_000, 64, CHUNK, pool::tryAllocate)) {
      put(c, 1); // puts are served on the event loop, not by the workers
      CompletableFuture<Integer> queued = c.prefixLengthAsync(new ChunkKey[] {key(1)});
      ChunkBuffer[] got =
          assertTimeoutPreemptively(
              Duration.ofSeconds(30),
              () -> c.getBatch(new ChunkKey[] {key(1), key(2)}),
              "a refused GET is answered, not left to time out");
      assertNull(got[0], "refused: a miss although the server holds it");
      assertNull(got[1]);
      assertEquals(1, srv.rejectedRequests());
      assertEquals(0L, c.errorCounts().getOrDefault(ErrorKind.TIMEOUT, 0L));
      assertFalse(queued.isDone(), "the EXISTS waits in the queue");
      free.countDown();
      assertEquals(1, queued.get(60, TimeUnit.SECONDS), "served once the worker was free");
      assertEquals(1, srv.rejectedRequests());
    } finally {
      free.countDown();
    }
  }
}
