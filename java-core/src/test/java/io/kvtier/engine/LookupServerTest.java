package io.kvtier.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.kvtier.config.KvTierConfig;
import io.kvtier.key.KeyNamespace;
import io.kvtier.memory.MmapAllocator;
import io.netty.channel.epoll.Epoll;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.net.BindException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The lookup server's wire format, checked byte by byte through a plain JDK {@link SocketChannel}
 * (not Netty), against a real engine.
 */
@Timeout(30)
class LookupServerTest {
  static final int CHUNK = 16;
  static final long BYTES_PER_TOKEN = 64;

  @TempDir Path dir;

  private final Arena arena = Arena.ofShared();
  private final List<AutoCloseable> toClose = new ArrayList<>();
  private KvEngine engine;

  @AfterEach
  void tearDown() throws Exception {
    for (AutoCloseable c : toClose.reversed()) {
      c.close();
    }
    if (engine != null) {
      engine.close();
      assertEquals(0, engine.pool().inUseSlots(), "engine leaked slots");
    }
    arena.close();
  }

  KvEngine open(Map<String, ?> settings) {
    Map<String, Object> s = new HashMap<>(Map.of("chunk_size", CHUNK));
    s.putAll(settings);
    engine =
        new KvEngine(
            KvTierConfig.of(s),
            new KeyNamespace("test-model", "bfloat16", 2, 2, 8, 1, 0, CHUNK, false),
            BYTES_PER_TOKEN,
            MmapAllocator.INSTANCE);
    return engine;
  }

  static int[] prompt(int n, long seed) {
    return new Random(seed).ints(n, 0, 150_000).toArray();
  }

  /** Stores the prompt's full chunks (zero bytes: lookups do not read them). */
  void store(int[] tokens) {
    int chunks = tokens.length / CHUNK;
    long[] src = new long[chunks];
    for (int c = 0; c < chunks; c++) {
      src[c] = arena.allocate(CHUNK * BYTES_PER_TOKEN).address();
    }
    engine.store(tokens, tokens.length, src);
  }

  LookupServer serve(Path socket) throws IOException {
    LookupServer s = LookupServer.start(engine, socket);
    toClose.add(s);
    return s;
  }

  Client connect(Path socket) throws IOException {
    Client c = new Client(SocketChannel.open(UnixDomainSocketAddress.of(socket)));
    toClose.add(c);
    return c;
  }

  Client greeted(Path socket) throws IOException {
    Client c = connect(socket);
    c.send(hello(LookupServer.VERSION));
    assertReply(c.read(), 0, le(4).putInt(LookupServer.VERSION).array());
    return c;
  }

  // ---- frames, built by hand -------------------------------------------------------------------

  static ByteBuffer le(int bytes) {
    return ByteBuffer.allocate(bytes).order(ByteOrder.LITTLE_ENDIAN);
  }

  static byte[] frame(int op, byte[] payload) {
    return le(5 + payload.length).putInt(1 + payload.length).put((byte) op).put(payload).array();
  }

  static byte[] hello(int version) {
    return frame(0, le(4).putInt(version).array());
  }

  static byte[] lookup(long requestId, boolean pin, int[] tokens) {
    return lookup(requestId, pin, tokens, new long[0]);
  }

  static byte[] lookup(long requestId, boolean pin, int[] tokens, long[] extras) {
    ByteBuffer p =
        le(17 + 8 * extras.length + 4 * tokens.length).putLong(requestId).put((byte) (pin ? 1 : 0));
    p.putInt(tokens.length).putInt(extras.length);
    for (long w : extras) {
      p.putLong(w);
    }
    for (int t : tokens) {
      p.putInt(t);
    }
    return frame(1, p.array());
  }

  static byte[] unpin(long requestId) {
    return frame(2, le(8).putLong(requestId).array());
  }

  record Reply(int status, byte[] payload) {
    int hitTokens() {
      assertEquals(0, status, () -> "error reply: " + message());
      assertEquals(20, payload.length);
      return ByteBuffer.wrap(payload).order(ByteOrder.LITTLE_ENDIAN).getInt();
    }

    int memoryTokens() {
      hitTokens();
      return ByteBuffer.wrap(payload).order(ByteOrder.LITTLE_ENDIAN).getInt(4);
    }

    int localTokens() {
      hitTokens();
      return ByteBuffer.wrap(payload).order(ByteOrder.LITTLE_ENDIAN).getInt(16);
    }

    String message() {
      return new String(payload, StandardCharsets.UTF_8);
    }
  }

  static void assertReply(Reply r, int status, byte[] payload) {
    assertEquals(status, r.status(), () -> "reply " + r.message());
    assertArrayEquals(payload, r.payload());
  }

  static void assertError(Reply r, String messagePart) {
    assertEquals(1, r.status());
    assertTrue(r.message().contains(messagePart), () -> r.message() + " lacks " + messagePart);
  }

  /** A blocking client speaking the protocol from raw bytes. */
  static final class Client implements AutoCloseable {
    final SocketChannel ch;

    Client(SocketChannel ch) {
      this.ch = ch;
    }

    void send(byte[] bytes) throws IOException {
      ByteBuffer b = ByteBuffer.wrap(bytes);
      while (b.hasRemaining()) {
        ch.write(b);
      }
    }

    /** Reads {@code n} bytes; false if the server closed the connection before any arrived. */
    boolean readFully(ByteBuffer b) throws IOException {
      while (b.hasRemaining()) {
        if (ch.read(b) < 0) {
          if (b.position() == 0) {
            return false;
          }
          throw new IOException("connection closed inside a reply");
        }
      }
      b.flip();
      return true;
    }

    Reply read() throws IOException {
      ByteBuffer head = le(5);
      assertTrue(readFully(head), "connection closed where a reply was expected");
      int length = head.getInt();
      byte status = head.get();
      ByteBuffer payload = ByteBuffer.allocate(length - 1);
      assertTrue(readFully(payload) || length == 1);
      return new Reply(status, payload.array());
    }

    /** Whether the server closed the connection (end of stream, nothing more sent). */
    boolean closedByServer() throws IOException {
      return !readFully(ByteBuffer.allocate(1));
    }

    @Override
    public void close() throws IOException {
      ch.close();
    }
  }

  // ---- handshake -------------------------------------------------------------------------------

  @Test
  void hello_version1_isAnsweredWithTheServersVersion() throws IOException {
    open(Map.of());
    Path socket = serve(dir.resolve("l.sock")).path();
    greeted(socket);
  }

  @Test
  void hello_otherVersion_isRefused_andTheConnectionStaysOpenForTheServersVersion()
      throws IOException {
    open(Map.of());
    Path socket = serve(dir.resolve("l.sock")).path();
    Client c = connect(socket);
    c.send(hello(1));
    assertError(
        c.read(), "protocol version 1 not supported; this server speaks " + LookupServer.VERSION);
    c.send(hello(LookupServer.VERSION));
    assertReply(c.read(), 0, le(4).putInt(LookupServer.VERSION).array());
  }

  @Test
  void lookup_beforeHello_isAnError_andCloses() throws IOException {
    open(Map.of());
    Path socket = serve(dir.resolve("l.sock")).path();
    Client c = connect(socket);
    c.send(lookup(1, false, new int[0]));
    assertError(c.read(), "before HELLO");
    assertTrue(c.closedByServer());
  }

  // ---- lookups ---------------------------------------------------------------------------------

  @Test
  void lookup_answersWhatTheEngineAnswers() throws IOException {
    open(Map.of());
    int[] p = prompt(5 * CHUNK + 3, 1);
    store(p);
    int[] diverging = p.clone();
    diverging[2 * CHUNK + 1] ^= 1;
    Client c = greeted(serve(dir.resolve("l.sock")).path());

    c.send(lookup(1, false, p));
    assertEquals(5 * CHUNK, c.read().hitTokens(), "chunk-aligned; the tail is not stored");
    c.send(lookup(2, false, diverging));
    assertEquals(2 * CHUNK, c.read().hitTokens());
    c.send(lookup(3, false, prompt(4 * CHUNK, 99)));
    assertEquals(0, c.read().hitTokens());
    c.send(lookup(4, false, new int[0]));
    assertEquals(0, c.read().hitTokens(), "an empty prompt");
    c.send(lookup(5, false, p, new long[] {0, 0}));
    assertEquals(5 * CHUNK, c.read().hitTokens(), "zero extras are the plain prompt's");
    c.send(lookup(6, false, p, new long[] {0, 0, 0, 0, 0, 0, 1, 2}));
    assertEquals(2 * CHUNK, c.read().hitTokens(), "an extra digest on chunk 2 keys it apart");
    c.send(lookup(7, true, p, new long[] {3, 4}));
    assertEquals(0, c.read().hitTokens(), "another epoch's root keys every chunk apart");
  }

  @Test
  void oddKeyExtraWords_areAnError_andClose() throws IOException {
    open(Map.of());
    Client c = greeted(serve(dir.resolve("l.sock")).path());
    c.send(lookup(1, false, new int[] {1, 2}, new long[] {1, 2, 3}));
    assertError(c.read(), "LOOKUP has 3 key-extra words; 0 or an even number of at least 2");
    assertTrue(c.closedByServer());
  }

  @Test
  void lookupWithPin_keepsChunksThroughChurn_untilUnpin() throws IOException {
    open(Map.of("max_local_cpu_size", 4.0 * 4096 / (1L << 30), "cache_policy", "LRU"));
    int[] p = prompt(2 * CHUNK, 8);
    store(p);
    Client c = greeted(serve(dir.resolve("l.sock")).path());

    c.send(lookup(77, true, p));
    Reply pinned = c.read();
    assertEquals(2 * CHUNK, pinned.hitTokens());
    assertEquals(2 * CHUNK, pinned.memoryTokens(), "a pinned lookup says what is in memory");
    assertEquals(2 * CHUNK, pinned.localTokens(), "and what is in the worker's own tiers");
    for (int i = 0; i < 6; i++) {
      store(prompt(2 * CHUNK, 200 + i));
    }
    c.send(lookup(78, false, p));
    Reply unpinned = c.read();
    assertEquals(2 * CHUNK, unpinned.hitTokens(), "pinned chunks survive churn");
    assertEquals(-1, unpinned.memoryTokens(), "not worked out without pin");
    assertEquals(-1, unpinned.localTokens(), "not worked out without pin");

    c.send(unpin(77));
    assertReply(c.read(), 0, new byte[0]);
    c.send(unpin(77));
    assertReply(c.read(), 0, new byte[0]); // idempotent, as is an unknown id
    for (int i = 0; i < 6; i++) {
      store(prompt(2 * CHUNK, 300 + i));
    }
    c.send(lookup(79, false, p));
    assertEquals(0, c.read().hitTokens(), "unpinned chunks can be evicted again");
  }

  @Test
  void pipelinedRequests_areAnsweredInOrder() throws IOException {
    open(Map.of());
    int[][] prompts = new int[8][];
    for (int i = 0; i < prompts.length; i++) {
      prompts[i] = prompt(CHUNK * (1 + i), 40 + i);
      if (i % 2 == 0) {
        store(prompts[i]);
      }
    }
    Client c = greeted(serve(dir.resolve("l.sock")).path());
    java.io.ByteArrayOutputStream all = new java.io.ByteArrayOutputStream();
    for (int i = 0; i < prompts.length; i++) {
      all.writeBytes(lookup(i, false, prompts[i]));
    }
    c.send(all.toByteArray()); // one write: the server sees the frames in one or few reads
    for (int[] p : prompts) {
      assertEquals(engine.lookup(p, p.length), c.read().hitTokens());
    }
  }

  @Test
  void engineError_isReplied_andTheConnectionStaysOpen() throws IOException {
    open(Map.of());
    Client c = greeted(serve(dir.resolve("l.sock")).path());
    engine.close();
    c.send(lookup(1, false, prompt(CHUNK, 1)));
    assertError(c.read(), "KvEngine is closed");
    c.send(lookup(1, true, prompt(CHUNK, 1)));
    assertError(c.read(), "KvEngine is closed");
    c.send(unpin(1));
    assertReply(c.read(), 0, new byte[0]);
  }

  // ---- protocol violations: error reply, then the connection is closed -------------------------

  @Test
  void tokenCountNotMatchingTheFrame_isAnError_andCloses() throws IOException {
    open(Map.of());
    Client c = greeted(serve(dir.resolve("l.sock")).path());
    byte[] f = lookup(1, false, new int[] {1, 2, 3});
    ByteBuffer.wrap(f).order(ByteOrder.LITTLE_ENDIAN).putInt(5 + 9, 4); // claims 4 tokens, has 3
    c.send(f);
    assertError(c.read(), "LOOKUP tokenCount 4 and 0 key-extra words do not match the 12 bytes");
    assertTrue(c.closedByServer());
  }

  @Test
  void negativeTokenCount_isAnError_andCloses() throws IOException {
    open(Map.of());
    Client c = greeted(serve(dir.resolve("l.sock")).path());
    byte[] f = lookup(1, false, new int[0]);
    ByteBuffer.wrap(f).order(ByteOrder.LITTLE_ENDIAN).putInt(5 + 9, -1);
    c.send(f);
    assertError(c.read(), "LOOKUP tokenCount -1");
    assertTrue(c.closedByServer());
  }

  @Test
  void shortPayloads_andUnknownFlags_areErrors_andClose() throws IOException {
    open(Map.of());
    Path socket = serve(dir.resolve("l.sock")).path();
    Client a = greeted(socket);
    a.send(frame(1, new byte[16]));
    assertError(a.read(), "LOOKUP payload is 16 bytes; at least 17 expected");
    assertTrue(a.closedByServer());

    Client b = greeted(socket);
    b.send(frame(2, new byte[7]));
    assertError(b.read(), "UNPIN payload is 7 bytes; 8 expected");
    assertTrue(b.closedByServer());

    Client d = greeted(socket);
    byte[] f = lookup(1, true, new int[0]);
    f[5 + 8] = 3;
    d.send(f);
    assertError(d.read(), "LOOKUP flags 0x3: unknown bits");
    assertTrue(d.closedByServer());

    Client e = connect(socket);
    e.send(frame(0, new byte[2]));
    assertError(e.read(), "HELLO payload is 2 bytes; 4 expected");
    assertTrue(e.closedByServer());
  }

  @Test
  void unknownOp_isAnError_andCloses() throws IOException {
    open(Map.of());
    Client c = greeted(serve(dir.resolve("l.sock")).path());
    c.send(frame(0xC8, new byte[4]));
    assertError(c.read(), "unknown op 200");
    assertTrue(c.closedByServer());
  }

  @Test
  void emptyFrame_isAnError_andCloses() throws IOException {
    open(Map.of());
    Client c = greeted(serve(dir.resolve("l.sock")).path());
    c.send(le(4).putInt(0).array());
    assertError(c.read(), "empty frame");
    assertTrue(c.closedByServer());
  }

  @Test
  void oversizeLength_isAnErrorAtOnce_andCloses() throws IOException {
    open(Map.of());
    Client c = greeted(serve(dir.resolve("l.sock")).path());
    // Only the header: the server must refuse on the length alone, not wait for 64 MiB.
    c.send(le(5).putInt(LookupServer.MAX_REQUEST_BYTES + 1).put((byte) 1).array());
    assertError(c.read(), "frame longer than the limit of 67108864 bytes");
    assertTrue(c.closedByServer());
  }

  @Test
  void framesAfterAViolation_inTheSameWrite_areNotAnswered() throws IOException {
    open(Map.of());
    Client c = greeted(serve(dir.resolve("l.sock")).path());
    java.io.ByteArrayOutputStream all = new java.io.ByteArrayOutputStream();
    all.writeBytes(frame(9, new byte[0]));
    all.writeBytes(unpin(1));
    c.send(all.toByteArray());
    assertError(c.read(), "unknown op 9");
    assertTrue(c.closedByServer());
  }

  // ---- the socket file -------------------------------------------------------------------------

  @ParameterizedTest(name = "epoll={0}")
  @ValueSource(booleans = {true, false})
  void eachTransport_serves_andCloseDeletesTheSocketFile(boolean epoll) throws IOException {
    assumeTrue(!epoll || Epoll.isAvailable(), "epoll is not available here");
    open(Map.of());
    int[] p = prompt(3 * CHUNK, 5);
    store(p);
    Path socket = dir.resolve("l.sock");
    LookupServer server = LookupServer.start(engine, socket, epoll);
    toClose.add(server);
    assertTrue(Files.exists(socket));
    assertEquals(socket.toAbsolutePath(), server.path());
    Client c = greeted(socket);
    c.send(lookup(1, false, p));
    assertEquals(3 * CHUNK, c.read().hitTokens());

    server.close();
    assertFalse(Files.exists(socket), "close deletes the socket file");
    assertTrue(c.closedByServer(), "close ends open connections");
    server.close(); // idempotent
  }

  @Test
  void staleSocketFile_isReplaced() throws IOException {
    open(Map.of());
    Path socket = dir.resolve("l.sock");
    try (ServerSocketChannel gone = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
      gone.bind(UnixDomainSocketAddress.of(socket)); // the JDK leaves the file behind on close
    }
    assertTrue(Files.exists(socket), "a stale socket file");
    greeted(serve(socket).path());
  }

  @Test
  void socketsOfDeadServersInTheDirectory_areDeletedAtStart_othersKept() throws IOException {
    open(Map.of());
    long old = System.currentTimeMillis() - 2 * LookupServer.STALE_AFTER_MILLIS;
    Path dead = dir.resolve("kvtier-1111-0.sock");
    Path young = dir.resolve("kvtier-2222-0.sock");
    Path future = dir.resolve("kvtier-6666-0.sock"); // made before the clock was set back an hour
    for (Path p : List.of(dead, young, future)) {
      try (ServerSocketChannel gone = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
        gone.bind(UnixDomainSocketAddress.of(p)); // the file stays behind, nobody listening
      }
    }
    Files.setLastModifiedTime(dead, java.nio.file.attribute.FileTime.fromMillis(old));
    Files.setLastModifiedTime(
        future,
        java.nio.file.attribute.FileTime.fromMillis(System.currentTimeMillis() + 3_600_000));
    Path live = dir.resolve("kvtier-3333-0.sock");
    serve(live);
    Files.setLastModifiedTime(live, java.nio.file.attribute.FileTime.fromMillis(old));
    Path other = Files.writeString(dir.resolve("kvtier-4444-0.sock"), "not a socket");
    Files.setLastModifiedTime(other, java.nio.file.attribute.FileTime.fromMillis(old));

    serve(dir.resolve("kvtier-5555-0.sock"));
    assertFalse(Files.exists(dead), "a dead server's socket is deleted");
    assertFalse(Files.exists(future), "a dead server's socket from before a clock jump is deleted");
    assertTrue(Files.exists(young), "a socket made just now may be binding: kept");
    assertTrue(Files.exists(other), "not a socket: kept");
    greeted(live); // a live server's socket is kept and still answers
  }

  @Test
  void liveServerAtThePath_isNotDisturbed() throws IOException {
    open(Map.of());
    Path socket = dir.resolve("l.sock");
    serve(socket);
    BindException e = assertThrows(BindException.class, () -> serve(socket));
    assertTrue(e.getMessage().contains("another process serves lookups there"), e.getMessage());
    greeted(socket); // the first server still answers
  }

  @Test
  void regularFileAtThePath_isLeftAlone() throws IOException {
    open(Map.of());
    Path socket = dir.resolve("not-a-socket");
    Files.writeString(socket, "keep me");
    assertThrows(FileAlreadyExistsException.class, () -> serve(socket));
    assertEquals("keep me", Files.readString(socket));
  }

  @ParameterizedTest(name = "epoll={0}")
  @ValueSource(booleans = {true, false})
  void pathOverTheSocketLimit_failsNamingThePath(boolean epoll) {
    assumeTrue(!epoll || Epoll.isAvailable(), "epoll is not available here");
    open(Map.of());
    Path socket = dir.resolve("s".repeat(110) + ".sock");
    IOException e =
        assertThrows(
            IOException.class, () -> toClose.add(LookupServer.start(engine, socket, epoll)));
    assertTrue(e.getMessage().contains(socket.toString()), e.getMessage());
  }

  @Test
  void missingParentDirectory_isCreatedOwnerOnly() throws IOException {
    open(Map.of());
    Path socket = dir.resolve("run/kvtier/l.sock");
    greeted(serve(socket).path());
    assertEquals(
        "rwx------",
        PosixFilePermissions.toString(Files.getPosixFilePermissions(socket.getParent())));
  }

  @Test
  void eventLoop_isADaemonThreadNamedKvtierLookup() throws IOException {
    open(Map.of());
    greeted(serve(dir.resolve("l.sock")).path()); // a connection makes the loop thread start
    List<Thread> loops =
        Thread.getAllStackTraces().keySet().stream()
            .filter(t -> t.getName().equals("kvtier-lookup"))
            .toList();
    assertFalse(loops.isEmpty());
    assertTrue(loops.stream().allMatch(Thread::isDaemon), loops::toString);
  }

  // ---- concurrency -----------------------------------------------------------------------------

  @Test
  void concurrentClients_eachGetTheirOwnAnswers() throws Exception {
    open(Map.of());
    int[][] prompts = new int[16][];
    for (int i = 0; i < prompts.length; i++) {
      prompts[i] = prompt(CHUNK * (1 + i % 5) + i, 1000 + i);
      if (i % 3 != 0) {
        store(prompts[i]);
      }
    }
    int[] expected = new int[prompts.length];
    for (int i = 0; i < prompts.length; i++) {
      expected[i] = engine.lookup(prompts[i], prompts[i].length);
    }
    Path socket = serve(dir.resolve("l.sock")).path();
    ExecutorService pool = Executors.newFixedThreadPool(8);
    try {
      List<Future<?>> clients = new ArrayList<>();
      for (int t = 0; t < 8; t++) {
        int seed = t;
        clients.add(
            pool.submit(
                () -> {
                  try (Client c =
                      new Client(SocketChannel.open(UnixDomainSocketAddress.of(socket)))) {
                    c.send(hello(LookupServer.VERSION));
                    assertEquals(0, c.read().status());
                    Random r = new Random(seed);
                    for (int k = 0; k < 300; k++) {
                      int i = r.nextInt(prompts.length);
                      boolean pin = r.nextBoolean();
                      long id = seed * 1_000_000L + k;
                      c.send(lookup(id, pin, prompts[i]));
                      assertEquals(expected[i], c.read().hitTokens(), "prompt " + i);
                      if (pin) {
                        c.send(unpin(id));
                        assertEquals(0, c.read().status());
                      }
                    }
                  }
                  return null;
                }));
      }
      for (Future<?> f : clients) {
        f.get();
      }
    } finally {
      pool.shutdownNow();
    }
  }
}
