package io.kvtier.remote.redis;

import io.kvtier.memory.ChunkBuffer;
import io.kvtier.wire.InFlightRequests;
import io.kvtier.wire.PipelinedConnection;
import io.kvtier.wire.RejectedRequestException;
import io.kvtier.wire.Request;
import io.kvtier.wire.SlotReceiveAllocator;
import io.kvtier.wire.ValueSink;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.SocketChannel;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.LongFunction;
import java.util.function.LongSupplier;
import java.util.function.Supplier;

/**
 * Pipelined {@code GET}s to one Redis or Valkey server (plain TCP, RESP2) whose values land in
 * pinned buffers with no copy in user space: while a value's bytes arrive, the socket is read
 * straight into its buffer ({@link SlotReceiveAllocator}). Lettuce, which the rest of {@link
 * RedisStore} uses, gathers a whole reply in a growing buffer and then hands it to the codec, which
 * copies it again.
 *
 * <p>The connection is a {@link PipelinedConnection} (replies in order): opened by the first GET
 * and again by the GET after it drops; after an attempt that failed slowly, GETs fail at once for
 * {@link #RETRY_NANOS}, doubling up to {@link #MAX_RETRY_NANOS} while attempts keep failing slowly.
 * {@code AUTH} and {@code SELECT} are its handshake when the URL asks for them. A batch of GETs is
 * one request: it times out after {@code timeoutMillis} and its late values are released, at most
 * {@link #MAX_OUTSTANDING_REPLIES} replies are outstanding, and it fails when the connection does.
 * This class only encodes GETs and decodes RESP: errors ({@code -ERR} replies, bytes that are not
 * RESP) fail the affected futures; garbage closes the connection. A value that finds no buffer (the
 * allocator answers null) is read past and answered as a miss. Thread-safe.
 */
final class RespGetClient implements AutoCloseable {
  /**
   * After a connection attempt that failed slowly (at least {@link #SLOW_ATTEMPT_NANOS}: a connect
   * timeout, a sentinel that does not answer), GETs fail at once for this long instead of trying
   * again, which would cost every batch the same wait. A refused connection costs nothing and is
   * tried again by the next GET, so a restarted server is found at once.
   */
  static final long RETRY_NANOS = TimeUnit.SECONDS.toNanos(1);

  /** Longest wait after repeated slow failures, in nanoseconds. */
  static final long MAX_RETRY_NANOS = TimeUnit.SECONDS.toNanos(30);

  /** A failed attempt that took at least this long (nanoseconds) starts a back-off. */
  static final long SLOW_ATTEMPT_NANOS = TimeUnit.MILLISECONDS.toNanos(100);

  /**
   * GET replies outstanding on the connection at most; beyond, a batch is refused ({@link
   * RejectedRequestException.Reason#BACKLOG}). Timed-out GETs keep their place until their replies
   * arrive (replies come in order), so on a stalled server this is what bounds the replies piling
   * up: {@code RedisStore}'s own count of reads ends with each read's deadline.
   */
  static final int MAX_OUTSTANDING_REPLIES = RedisStore.MAX_IN_FLIGHT_READS;

  private static final byte[] GET = "GET".getBytes(StandardCharsets.US_ASCII);

  private final List<byte[][]> handshake;
  private final long timeoutMillis;
  private final LongFunction<ChunkBuffer> buffers;
  private final EventLoopGroup group;
  private final boolean ownsGroup;
  private final PipelinedConnection connection;

  /**
   * @param handshake commands sent on each new connection before any GET (e.g. {@code AUTH}, {@code
   *     SELECT}), each as its arguments
   */
  RespGetClient(
      String host,
      int port,
      List<byte[][]> handshake,
      long timeoutMillis,
      LongFunction<ChunkBuffer> buffers) {
    this(
        () -> InetSocketAddress.createUnresolved(host, port),
        handshake,
        timeoutMillis,
        buffers,
        null);
  }

  /**
   * @param handshake commands sent on each new connection before any GET (e.g. {@code AUTH}, {@code
   *     SELECT}), each as its arguments
   * @param server where to connect, asked again for each new connection (a sentinel's current
   *     master); may throw if it cannot say
   * @param group the event loops to use, owned by the caller; null for one of its own
   */
  RespGetClient(
      Supplier<InetSocketAddress> server,
      List<byte[][]> handshake,
      long timeoutMillis,
      LongFunction<ChunkBuffer> buffers,
      EventLoopGroup group) {
    this(server, handshake, timeoutMillis, buffers, group, System::nanoTime);
  }

  /**
   * Like {@link #RespGetClient(Supplier, List, long, LongFunction, EventLoopGroup)}, with the clock
   * that times connection attempts against {@link #SLOW_ATTEMPT_NANOS} and {@link #RETRY_NANOS}
   * (tests pass a fake one). Connect and reply timeouts stay on the system clock.
   *
   * @param nanoClock monotonic time in nanoseconds, like {@link System#nanoTime()}
   */
  RespGetClient(
      Supplier<InetSocketAddress> server,
      List<byte[][]> handshake,
      long timeoutMillis,
      LongFunction<ChunkBuffer> buffers,
      EventLoopGroup group,
      LongSupplier nanoClock) {
    this.handshake = List.copyOf(handshake);
    this.timeoutMillis = timeoutMillis;
    this.buffers = buffers;
    this.ownsGroup = group == null;
    this.group = ownsGroup ? newGroup(1) : group;
    this.connection =
        new PipelinedConnection(
            server,
            this.group,
            new PipelinedConnection.Settings(
                InFlightRequests.ReplyOrder.IN_ORDER,
                timeoutMillis,
                timeoutMillis,
                MAX_OUTSTANDING_REPLIES,
                RETRY_NANOS,
                MAX_RETRY_NANOS,
                SLOW_ATTEMPT_NANOS),
            new Resp(),
            nanoClock);
  }

  /** Event loops for RESP GET clients ({@code kvtier-redis-get} threads). */
  static EventLoopGroup newGroup(int threads) {
    return new MultiThreadIoEventLoopGroup(
        threads, io.kvtier.DaemonThreads.named("kvtier-redis-get"), NioIoHandler.newFactory());
  }

  /**
   * Sends {@code GET key} for every key in one write and returns the replies in order: a buffer the
   * caller owns, or null for a key that does not exist. A future completes exceptionally when the
   * server answers an error, the connection fails, or no reply came within {@code timeoutMillis}
   * ({@link java.util.concurrent.TimeoutException}; a value that comes later is released). Does not
   * block beyond connecting.
   *
   * @throws RejectedRequestException if too many replies are outstanding ({@link
   *     RejectedRequestException.Reason#BACKLOG}) or the client is closed
   * @throws IOException if no connection can be opened
   */
  List<CompletableFuture<ChunkBuffer>> get(byte[][] keys) throws IOException {
    if (keys.length == 0) {
      return List.of();
    }
    connection.ensureConnected();
    Request<ChunkBuffer> r = new Request<>(ChunkBuffer.class, keys.length);
    connection.send(
        r,
        timeoutMillis,
        (alloc, id) -> {
          ByteBuf cmds = alloc.buffer(keys.length * 64);
          for (byte[] key : keys) {
            writeCommand(cmds, GET, key);
          }
          return cmds;
        });
    return r.replies();
  }

  /** The RESP side of the connection: the handshake and the reply decoder. */
  private final class Resp implements PipelinedConnection.Handler {
    @Override
    public SlotReceiveAllocator.SlotReceiver initChannel(
        SocketChannel ch, InFlightRequests requests) {
      Decoder d = new Decoder(requests);
      ch.pipeline().addLast(d);
      return d;
    }

    @Override
    public PipelinedConnection.Handshake handshake() {
      if (handshake.isEmpty()) {
        return null;
      }
      return new PipelinedConnection.Handshake(
          new Request<>(ChunkBuffer.class, handshake.size()),
          (alloc, id) -> {
            ByteBuf cmds = alloc.buffer();
            for (byte[][] args : handshake) {
              writeCommand(cmds, args);
            }
            return cmds;
          });
    }
  }

  /** Writes one RESP array of bulk strings. */
  private static void writeCommand(ByteBuf out, byte[]... args) {
    out.writeByte('*')
        .writeBytes(Integer.toString(args.length).getBytes(StandardCharsets.US_ASCII));
    out.writeByte('\r').writeByte('\n');
    for (byte[] a : args) {
      out.writeByte('$').writeBytes(Integer.toString(a.length).getBytes(StandardCharsets.US_ASCII));
      out.writeByte('\r').writeByte('\n').writeBytes(a).writeByte('\r').writeByte('\n');
    }
  }

  /**
   * Fails what is pending, closes the connection, and stops the event loops if they are its own.
   */
  @Override
  public void close() {
    connection.close();
    if (ownsGroup) {
      group.shutdownGracefully(0, 1, TimeUnit.SECONDS).awaitUninterruptibly(2, TimeUnit.SECONDS);
    }
  }

  /**
   * RESP2 replies, matched in order to the parts of the oldest request, values read into pinned
   * buffers. Confined to the channel's event loop.
   */
  private final class Decoder extends ChannelInboundHandlerAdapter
      implements SlotReceiveAllocator.SlotReceiver {
    private static final int LINE = 0;
    private static final int BODY = 1;
    private static final int BODY_END = 2;
    private static final int FAILED = 3;
    private static final int MAX_LINE = 4096;

    private final InFlightRequests requests;
    private int state = LINE;
    private final byte[] line = new byte[MAX_LINE];
    private int lineLength;
    private final ValueSink value = new ValueSink(); // discards a value that found no buffer
    private int endBytes;

    Decoder(InFlightRequests requests) {
      this.requests = requests;
    }

    @Override
    public ByteBuf slotReceiveBuffer() {
      return state == BODY ? value.receiveBuffer() : null;
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
      ByteBuf in = (ByteBuf) msg;
      if (value.tookSlotRead(in)) { // the socket was read straight into the value's buffer
        if (value.remaining() == 0) {
          state = BODY_END;
        }
        return;
      }
      try {
        while (in.isReadable() && state != FAILED) {
          step(in);
        }
      } catch (IOException e) {
        state = FAILED;
        failAll(e);
        ctx.close();
      } finally {
        in.release();
      }
    }

    private void step(ByteBuf in) throws IOException {
      switch (state) {
        case LINE -> {
          int nl = in.bytesBefore((byte) '\n');
          int take = nl < 0 ? in.readableBytes() : nl + 1;
          if (lineLength + take > MAX_LINE) {
            throw new IOException("a reply line longer than " + MAX_LINE + " bytes");
          }
          in.readBytes(line, lineLength, take);
          lineLength += take;
          if (nl >= 0) {
            reply();
          }
        }
        case BODY -> {
          value.copyFrom(in);
          if (value.remaining() == 0) {
            state = BODY_END;
          }
        }
        case BODY_END -> {
          byte b = in.readByte();
          if (b != (endBytes == 0 ? '\r' : '\n')) {
            throw new IOException("a bulk reply does not end with CRLF");
          }
          if (++endBytes == 2) {
            endBytes = 0;
            state = LINE;
            complete(value.take());
          }
        }
        default -> throw new IllegalStateException("state " + state);
      }
    }

    /** A whole reply line is in {@code line}. */
    private void reply() throws IOException {
      int n = lineLength;
      lineLength = 0;
      if (n < 3 || line[n - 2] != '\r') {
        throw new IOException("a reply line does not end with CRLF");
      }
      String rest = new String(line, 1, n - 3, StandardCharsets.US_ASCII);
      switch (line[0]) {
        case '$' -> {
          long length = parseLength(rest);
          if (length == -1) {
            complete(null);
          } else if (length < 0) {
            throw new IOException("a bulk reply of length " + length);
          } else {
            startValue(length);
          }
        }
        case '+', ':' -> complete(null);
        case '-' -> {
          Request<?> r = next();
          requests.answerError(r, r.nextPart(), new IOException("server error: " + rest));
        }
        default -> throw new IOException("not a RESP reply: " + printable(line, n));
      }
    }

    private void startValue(long length) throws IOException {
      next(); // a value with no command to answer is garbage
      // Received even when its request timed out (released when it is complete); read past when
      // it finds no buffer (then a miss).
      value.start(buffers.apply(length), length);
      state = length == 0 ? BODY_END : BODY;
    }

    /** The request the next reply answers. */
    private Request<?> next() throws IOException {
      Request<?> r = requests.oldest();
      if (r == null) {
        throw new IOException("a reply to no command");
      }
      return r;
    }

    private void complete(ChunkBuffer buffer) throws IOException {
      Request<?> r;
      try {
        r = next();
      } catch (IOException e) {
        if (buffer != null) {
          buffer.release();
        }
        throw e;
      }
      requests.answer(r, r.nextPart(), buffer); // released there if the part ended meanwhile
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
      state = FAILED;
      value.release(); // the pending requests fail with the connection
      ctx.fireChannelInactive();
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
      state = FAILED;
      failAll(cause instanceof IOException io ? io : new IOException(cause));
      ctx.close();
    }

    /** Drops the value being received and fails every pending request with {@code e}. */
    private void failAll(IOException e) {
      value.release();
      requests.close(e);
    }
  }

  private static long parseLength(String s) throws IOException {
    try {
      return Long.parseLong(s);
    } catch (NumberFormatException e) {
      throw new IOException("a bulk length that is not a number: '" + s + "'");
    }
  }

  private static String printable(byte[] b, int n) {
    StringBuilder sb = new StringBuilder();
    for (int i = 0; i < Math.min(n, 40); i++) {
      int c = b[i] & 0xff;
      sb.append(c >= 0x20 && c < 0x7f ? Character.toString(c) : String.format("\\x%02x", c));
    }
    return sb.toString();
  }
}
