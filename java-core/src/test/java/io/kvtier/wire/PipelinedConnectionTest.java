package io.kvtier.wire;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.testing.Await;
import io.kvtier.wire.InFlightRequests.ReplyOrder;
import io.kvtier.wire.RejectedRequestException.Reason;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.SocketChannel;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.foreign.ValueLayout;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The connection base against a peer the test scripts over a plain socket, speaking kvtier's frames
 * (a request is a GET header whose id the peer answers with VALUE or MISS frames, one per part).
 * Outcomes are decided by replies, closes and awaited conditions, never by sleeping.
 */
class PipelinedConnectionTest {
  static final int VALUE = 100_000; // long enough for reads straight into the value's buffer
  static final long WAIT_SECONDS = 60;

  ChunkPool pool;
  EventLoopGroup group;
  Peer peer;
  PipelinedConnection connection;
  final AtomicInteger failedAttempts = new AtomicInteger();
  final AtomicInteger losses = new AtomicInteger();

  @BeforeEach
  void setUp() throws IOException {
    pool = new ChunkPool(MmapAllocator.INSTANCE, VALUE, 16L * VALUE, 1 << 21);
    group = new MultiThreadIoEventLoopGroup(1, NioIoHandler.newFactory());
    peer = new Peer(0);
  }

  @AfterEach
  void tearDown() throws Exception {
    if (connection != null) {
      connection.close();
    }
    peer.close();
    group.shutdownGracefully(0, 1, TimeUnit.SECONDS).awaitUninterruptibly();
    Await.until(
        "value buffers to be released",
        () -> pool.inUseSlots() == 0,
        () -> "a value buffer leaked: " + pool.inUseSlots() + " in use");
    pool.close();
  }

  PipelinedConnection connection(ReplyOrder order, int maxReplies, int port) {
    connection =
        new PipelinedConnection(
            () -> new InetSocketAddress("127.0.0.1", port),
            group,
            new PipelinedConnection.Settings(
                order,
                5_000,
                5_000,
                maxReplies,
                TimeUnit.MILLISECONDS.toNanos(10),
                TimeUnit.MILLISECONDS.toNanos(200),
                TimeUnit.MILLISECONDS.toNanos(100)),
            new TestProtocol(),
            System::nanoTime);
    return connection;
  }

  /** Sends a request of {@code parts} parts; its id is what the peer answers. */
  Request<ChunkBuffer> send(int parts, long deadlineMillis) throws RejectedRequestException {
    Request<ChunkBuffer> r = new Request<>(ChunkBuffer.class, parts);
    connection.send(r, deadlineMillis, (alloc, id) -> request(alloc, id, parts));
    return r;
  }

  static ByteBuf request(io.netty.buffer.ByteBufAllocator alloc, int id, int parts) {
    ByteBuf out = alloc.buffer(Protocol.HEADER_BYTES + 2);
    Protocol.header(out, Protocol.GET, id, 2);
    out.writeShortLE(parts);
    return out;
  }

  static Throwable failure(Request<?> r, int part) {
    ExecutionException e =
        assertThrows(
            ExecutionException.class, () -> r.reply(part).get(WAIT_SECONDS, TimeUnit.SECONDS));
    return e.getCause();
  }

  static byte[] value(int fill) {
    byte[] v = new byte[VALUE];
    Arrays.fill(v, (byte) fill);
    return v;
  }

  static void assertValue(int fill, ChunkBuffer b) {
    assertNotNull(b);
    byte[] got = b.segment().toArray(ValueLayout.JAVA_BYTE);
    assertTrue(Arrays.equals(value(fill), got), "the value's bytes");
  }

  /**
   * The deadline passes first: the request completes as a timeout (BY_ID forgets it; IN_ORDER keeps
   * its place) and its value, arriving later, is released: once a later request's value has come
   * (the stream is in order), only that one is in use.
   */
  @ParameterizedTest
  @EnumSource(ReplyOrder.class)
  void deadlinePassed_completesAsTimeout_andTheLateValueIsReleased(ReplyOrder order)
      throws Exception {
    connection(order, 16, peer.port()).ensureConnected();
    Socket s = peer.next();
    int before = pool.inUseSlots();

    Request<ChunkBuffer> late = send(1, 50);
    int lateId = Peer.readRequest(s);
    assertInstanceOf(TimeoutException.class, failure(late, 0));
    assertEquals(
        order == ReplyOrder.BY_ID ? 0 : 1,
        connection.pendingRequests(),
        "BY_ID forgets a timed-out request; IN_ORDER keeps its place in the stream");

    Peer.value(s, lateId, 0, value(1)); // after the deadline
    Request<ChunkBuffer> next = send(1, 0);
    Peer.value(s, Peer.readRequest(s), 0, value(2));
    ChunkBuffer b = next.reply(0).get(WAIT_SECONDS, TimeUnit.SECONDS);
    assertValue(2, b);
    assertEquals(before + 1, pool.inUseSlots(), "the late value was released, not kept");
    b.release();
    assertEquals(before, pool.inUseSlots());
    assertEquals(0, connection.pendingRequests());
  }

  /** A reply within the deadline is delivered, and the deadline then does nothing to it. */
  @Test
  void replyBeforeDeadline_isDelivered_missesAsNull() throws Exception {
    connection(ReplyOrder.BY_ID, 16, peer.port()).ensureConnected();
    Socket s = peer.next();
    Request<ChunkBuffer> r = send(2, 60_000);
    int id = Peer.readRequest(s);
    Peer.miss(s, id, 1);
    Peer.value(s, id, 0, value(7));
    assertNull(r.reply(1).get(WAIT_SECONDS, TimeUnit.SECONDS));
    ChunkBuffer b = r.reply(0).get(WAIT_SECONDS, TimeUnit.SECONDS);
    assertValue(7, b);
    b.release();
    assertEquals(0, connection.pendingRequests());
  }

  /**
   * The peer drops the connection with requests pending, one of them halfway through its value:
   * every pending request fails, the half value's buffer is released, and new requests are refused
   * until a connection is made again.
   */
  @Test
  void connectionDropped_failsEveryPendingRequest_andReleasesAHalfValue() throws Exception {
    connection(ReplyOrder.BY_ID, 16, peer.port()).ensureConnected();
    Socket s = peer.next();
    List<Request<ChunkBuffer>> pending = new ArrayList<>();
    for (int i = 0; i < 3; i++) {
      pending.add(send(1, 0));
    }
    int first = Peer.readRequest(s);
    Peer.readRequest(s);
    Peer.readRequest(s);
    Peer.halfValue(s, first, 0, VALUE);
    Await.until("the half value to be received into a buffer", () -> pool.inUseSlots() == 1);
    s.close();
    for (Request<ChunkBuffer> r : pending) {
      Throwable t = failure(r, 0);
      assertInstanceOf(IOException.class, t);
      assertTrue(t.getMessage().contains("closed"), t.getMessage());
    }
    Await.until("the half value to be released", () -> pool.inUseSlots() == 0);
    assertEquals(0, connection.pendingRequests());
    Await.until("the connection to be seen down", () -> !connection.isConnected());
    RejectedRequestException e = assertThrows(RejectedRequestException.class, () -> send(1, 0));
    assertEquals(Reason.NOT_CONNECTED, e.reason());
    Await.until("the loss to be reported", () -> losses.get() == 1);

    connection.ensureConnected(); // on demand: the caller connects again
    Socket again = peer.next();
    Request<ChunkBuffer> r = send(1, 0);
    Peer.miss(again, Peer.readRequest(again), 0);
    assertNull(r.reply(0).get(WAIT_SECONDS, TimeUnit.SECONDS));
  }

  /** Replies outstanding are bounded: a request beyond is refused, unsent, until room is made. */
  @Test
  void outstandingBound_refusesBeyondIt_withBacklog_untilRepliesCome() throws Exception {
    connection(ReplyOrder.BY_ID, 3, peer.port()).ensureConnected();
    Socket s = peer.next();
    Request<ChunkBuffer> two = send(2, 0);
    Request<ChunkBuffer> one = send(1, 0);
    AtomicBoolean encoded = new AtomicBoolean();
    RejectedRequestException e =
        assertThrows(
            RejectedRequestException.class,
            () ->
                connection.send(
                    new Request<>(ChunkBuffer.class, 1),
                    0,
                    (alloc, id) -> {
                      encoded.set(true);
                      return request(alloc, id, 1);
                    }));
    assertEquals(Reason.BACKLOG, e.reason());
    assertFalse(encoded.get(), "a refused request is not written");

    int twoId = Peer.readRequest(s);
    int oneId = Peer.readRequest(s);
    Peer.miss(s, oneId, 0);
    assertNull(one.reply(0).get(WAIT_SECONDS, TimeUnit.SECONDS));
    Request<ChunkBuffer> now = send(1, 0); // room for one again
    Peer.miss(s, Peer.readRequest(s), 0);
    assertNull(now.reply(0).get(WAIT_SECONDS, TimeUnit.SECONDS));
    Peer.miss(s, twoId, 0);
    Peer.miss(s, twoId, 1);
    assertNull(two.reply(1).get(WAIT_SECONDS, TimeUnit.SECONDS));
    assertEquals(0, connection.pendingRequests());
  }

  /**
   * In the background the connection keeps trying (with back-off) while the server is away,
   * connects once it is back, and again after it drops the connection.
   */
  @Test
  void inBackground_reconnectsWhenTheServerComesBack_andAfterADrop() throws Exception {
    int port = peer.port();
    peer.close();
    connection(ReplyOrder.BY_ID, 16, port)
        .connectInBackground()
        .get(WAIT_SECONDS, TimeUnit.SECONDS);
    assertFalse(connection.isConnected());
    assertTrue(failedAttempts.get() >= 1);
    Await.until("a retry to fail too", () -> failedAttempts.get() >= 2);

    peer = new Peer(port); // back
    Socket s = peer.next();
    Await.until("the connection to be made", connection::isConnected);
    Request<ChunkBuffer> r = send(1, 0);
    Peer.miss(s, Peer.readRequest(s), 0);
    assertNull(r.reply(0).get(WAIT_SECONDS, TimeUnit.SECONDS));

    s.close(); // the server drops it
    Socket again = peer.next(); // the connection's own next attempt
    Await.until("the connection to be made again", connection::isConnected);
    assertEquals(1, losses.get());
    Request<ChunkBuffer> r2 = send(1, 0);
    Peer.miss(again, Peer.readRequest(again), 0);
    assertNull(r2.reply(0).get(WAIT_SECONDS, TimeUnit.SECONDS));
  }

  /** Closing fails what is pending and refuses what comes after; a second close does nothing. */
  @Test
  void close_failsPending_andRefusesNewRequests() throws Exception {
    connection(ReplyOrder.IN_ORDER, 16, peer.port()).ensureConnected();
    peer.next();
    Request<ChunkBuffer> r = send(1, 0);
    connection.close();
    connection.close();
    assertInstanceOf(IOException.class, failure(r, 0));
    RejectedRequestException e = assertThrows(RejectedRequestException.class, () -> send(1, 0));
    assertEquals(Reason.CLOSED, e.reason());
    assertEquals(
        Reason.CLOSED,
        assertThrows(RejectedRequestException.class, connection::ensureConnected).reason());
    assertEquals(0, losses.get(), "a close is not a loss");
  }

  /** The test's client side of the frames: values into pool slots, always (even late ones). */
  final class TestProtocol implements PipelinedConnection.Handler {
    @Override
    public SlotReceiveAllocator.SlotReceiver initChannel(
        SocketChannel ch, InFlightRequests requests) {
      FrameDecoder d = new FrameDecoder(new Replies(requests), VALUE);
      ch.pipeline().addLast(d);
      return d;
    }

    @Override
    public void connectFailed(IOException error) {
      failedAttempts.incrementAndGet();
    }

    @Override
    public void disconnected(String where) {
      losses.incrementAndGet();
    }
  }

  /** Receives every value into a buffer, so a late one must be released by the base. */
  final class Replies implements FrameDecoder.Listener {
    private final InFlightRequests requests;
    private int index;

    Replies(InFlightRequests requests) {
      this.requests = requests;
    }

    @Override
    public void onFrame(ChannelHandlerContext ctx, byte op, int id, ByteBuf payload) {
      if (op == Protocol.MISS) {
        requests.answer(id, payload.readUnsignedShortLE(), null);
      }
    }

    @Override
    public ChunkBuffer onBulkStart(
        ChannelHandlerContext ctx, byte op, int id, ByteBuf prefix, long valueBytes) {
      index = prefix.readUnsignedShortLE();
      return pool.tryAllocate(valueBytes);
    }

    @Override
    public void onBulkEnd(ChannelHandlerContext ctx, byte op, int id, ChunkBuffer target) {
      requests.answer(id, index, target);
    }
  }

  /** A server the test drives: accepted sockets are handed to the test in order. */
  static final class Peer implements AutoCloseable {
    private final ServerSocket listener;
    private final BlockingQueue<Socket> accepted = new LinkedBlockingQueue<>();
    private final List<Socket> all = new ArrayList<>();

    Peer(int port) throws IOException {
      listener = new ServerSocket();
      listener.setReuseAddress(true);
      listener.bind(new InetSocketAddress("127.0.0.1", port));
      Thread t =
          new Thread(
              () -> {
                try {
                  while (true) {
                    accepted.add(listener.accept());
                  }
                } catch (IOException closed) {
                  // the test is over
                }
              },
              "test-peer-accept");
      t.setDaemon(true);
      t.start();
    }

    int port() {
      return listener.getLocalPort();
    }

    Socket next() throws InterruptedException {
      Socket s = accepted.poll(WAIT_SECONDS, TimeUnit.SECONDS);
      assertNotNull(s, "no connection came");
      synchronized (all) {
        all.add(s);
      }
      return s;
    }

    /** Reads one request frame; returns its id. */
    static int readRequest(Socket s) throws IOException {
      DataInputStream in = new DataInputStream(s.getInputStream());
      byte[] head = new byte[Protocol.HEADER_BYTES];
      in.readFully(head);
      ByteBuffer h = ByteBuffer.wrap(head).order(ByteOrder.LITTLE_ENDIAN);
      int length = h.getInt(0);
      in.readFully(new byte[length - 5]);
      return h.getInt(5);
    }

    static void value(Socket s, int id, int index, byte[] v) throws IOException {
      ByteBuffer b =
          ByteBuffer.allocate(Protocol.HEADER_BYTES + 2 + v.length).order(ByteOrder.LITTLE_ENDIAN);
      b.putInt(5 + 2 + v.length).put(Protocol.VALUE).putInt(id).putShort((short) index).put(v);
      write(s, b.array());
    }

    /** The header and half the bytes of a {@code length}-byte value. */
    static void halfValue(Socket s, int id, int index, int length) throws IOException {
      ByteBuffer b =
          ByteBuffer.allocate(Protocol.HEADER_BYTES + 2 + length / 2)
              .order(ByteOrder.LITTLE_ENDIAN);
      b.putInt(5 + 2 + length).put(Protocol.VALUE).putInt(id).putShort((short) index);
      write(s, b.array());
    }

    static void miss(Socket s, int id, int index) throws IOException {
      ByteBuffer b = ByteBuffer.allocate(Protocol.HEADER_BYTES + 2).order(ByteOrder.LITTLE_ENDIAN);
      b.putInt(5 + 2).put(Protocol.MISS).putInt(id).putShort((short) index);
      write(s, b.array());
    }

    private static void write(Socket s, byte[] bytes) throws IOException {
      OutputStream out = s.getOutputStream();
      out.write(bytes);
      out.flush();
    }

    @Override
    public void close() throws IOException {
      listener.close();
      synchronized (all) {
        for (Socket s : all) {
          s.close();
        }
      }
      for (Socket s; (s = accepted.poll()) != null; ) {
        s.close();
      }
    }
  }
}
