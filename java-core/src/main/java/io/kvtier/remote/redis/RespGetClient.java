package io.kvtier.remote.redis;

import io.kvtier.memory.ChunkBuffer;
import io.kvtier.wire.SlotReceiveAllocator;
import io.kvtier.wire.ValueSink;
import io.netty.buffer.ByteBuf;
import io.netty.channel.Channel;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.nio.NioIoHandler;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Queue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
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
 * <p>One connection, opened on first use and again after it drops (after a slow failure, not again
 * for {@link #RETRY_NANOS}); {@code AUTH} and {@code SELECT} are sent first when the URL asks for
 * them. Errors (connection lost, {@code -ERR} replies, bytes that are not RESP) fail the affected
 * futures; garbage closes the connection. A value that finds no buffer (the allocator answers null)
 * is read past and answered as a miss. Thread-safe.
 */
final class RespGetClient implements AutoCloseable {
  private final Supplier<InetSocketAddress> server;
  private final List<byte[][]> handshake;
  private final long timeoutMillis;
  private final LongFunction<ChunkBuffer> buffers;
  private final EventLoopGroup group;
  private final boolean ownsGroup;
  private final Object writeLock = new Object();
  private final LongSupplier nanoClock;

  /** A connection and the decoder of its replies: commands and futures always go in pairs. */
  private record Conn(Channel channel, Decoder decoder) {}

  private volatile Conn conn;

  /**
   * After a connection attempt that failed slowly (at least {@link #SLOW_ATTEMPT_NANOS}: a connect
   * timeout, a sentinel that does not answer), GETs fail at once for this long instead of trying
   * again, which would cost every batch the same wait. A refused connection costs nothing and is
   * tried again by the next GET, so a restarted server is found at once.
   */
  static final long RETRY_NANOS = TimeUnit.SECONDS.toNanos(1);

  static final long SLOW_ATTEMPT_NANOS = TimeUnit.MILLISECONDS.toNanos(100);

  private IOException lastFailure; // the last attempt's error, while it is recent; guarded by this
  private long lastFailureNanos;

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
    this.nanoClock = nanoClock;
    this.server = server;
    this.handshake = List.copyOf(handshake);
    this.timeoutMillis = timeoutMillis;
    this.buffers = buffers;
    this.ownsGroup = group == null;
    this.group = ownsGroup ? newGroup(1) : group;
  }

  /** Event loops for RESP GET clients ({@code kvtier-redis-get} threads). */
  static EventLoopGroup newGroup(int threads) {
    return new MultiThreadIoEventLoopGroup(
        threads, io.kvtier.DaemonThreads.named("kvtier-redis-get"), NioIoHandler.newFactory());
  }

  /**
   * Sends {@code GET key} for every key in one write and returns the replies in order: a buffer the
   * caller owns, or null for a key that does not exist. A future completes exceptionally when the
   * server answers an error or the connection fails.
   *
   * @throws IOException if no connection can be opened
   */
  List<CompletableFuture<ChunkBuffer>> get(byte[][] keys) throws IOException {
    Conn c = connection();
    Channel ch = c.channel();
    List<CompletableFuture<ChunkBuffer>> out = new ArrayList<>(keys.length);
    ByteBuf cmds = ch.alloc().buffer(keys.length * 64);
    byte[] get = "GET".getBytes(StandardCharsets.US_ASCII);
    synchronized (writeLock) { // replies come back in the order the commands are queued
      for (byte[] key : keys) {
        writeCommand(cmds, get, key);
        CompletableFuture<ChunkBuffer> f = new CompletableFuture<>();
        c.decoder().pending.add(f);
        out.add(f);
      }
      ch.writeAndFlush(cmds);
    }
    if (!ch.isActive()) { // closed while queuing: nothing will answer these
      c.decoder().failPending(new IOException("connection to " + c.decoder().where + " closed"));
    }
    return out;
  }

  private Conn connection() throws IOException {
    Conn c = conn;
    if (c != null && c.channel().isActive()) {
      return c;
    }
    synchronized (this) {
      c = conn;
      if (c != null && c.channel().isActive()) {
        return c;
      }
      long now = nanoClock.getAsLong();
      if (lastFailure != null && now - lastFailureNanos < RETRY_NANOS) {
        throw new IOException(
            "not connected (last attempt "
                + (now - lastFailureNanos) / 1_000_000
                + " ms ago: "
                + lastFailure.getMessage()
                + ")",
            lastFailure);
      }
      try {
        c = connect();
      } catch (IOException e) {
        long end = nanoClock.getAsLong();
        if (end - now >= SLOW_ATTEMPT_NANOS) { // a timeout, not a refusal: do not pay it again soon
          lastFailure = e;
          lastFailureNanos = end;
        }
        throw e;
      }
      lastFailure = null;
      conn = c;
      return c;
    }
  }

  private Conn connect() throws IOException {
    InetSocketAddress address;
    try {
      address = server.get();
    } catch (RuntimeException e) {
      throw new IOException("cannot find the server: " + e.getMessage(), e);
    }
    String host = address.getHostString();
    int port = address.getPort();
    Decoder d = new Decoder(host + ":" + port);
    Channel ch;
    try {
      ch =
          SlotReceiveAllocator.client(
                  group,
                  timeoutMillis,
                  c -> {
                    c.pipeline().addLast(d);
                    return d;
                  })
              .connect(host, port)
              .sync()
              .channel();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException("interrupted while connecting to " + host + ":" + port, e);
    } catch (RuntimeException e) {
      throw new IOException("cannot connect to " + host + ":" + port + ": " + e.getMessage(), e);
    }
    List<CompletableFuture<ChunkBuffer>> replies = new ArrayList<>();
    ByteBuf cmds = ch.alloc().buffer();
    for (byte[][] args : handshake) {
      writeCommand(cmds, args);
      CompletableFuture<ChunkBuffer> f = new CompletableFuture<>();
      d.pending.add(f);
      replies.add(f);
    }
    ch.writeAndFlush(cmds);
    try {
      for (CompletableFuture<ChunkBuffer> f : replies) {
        f.get(timeoutMillis, TimeUnit.MILLISECONDS);
      }
    } catch (Exception e) {
      ch.close();
      Throwable cause = e instanceof java.util.concurrent.ExecutionException ? e.getCause() : e;
      throw new IOException("handshake with " + host + ":" + port + " failed: " + cause, cause);
    }
    return new Conn(ch, d);
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

  @Override
  public void close() {
    Conn c = conn;
    if (c != null) {
      c.channel().close().awaitUninterruptibly(1, TimeUnit.SECONDS);
    }
    if (ownsGroup) {
      group.shutdownGracefully(0, 1, TimeUnit.SECONDS).awaitUninterruptibly(2, TimeUnit.SECONDS);
    }
  }

  /** RESP2 replies, one per queued future, values read into pinned buffers. */
  private final class Decoder extends ChannelInboundHandlerAdapter
      implements SlotReceiveAllocator.SlotReceiver {
    private static final int LINE = 0;
    private static final int BODY = 1;
    private static final int BODY_END = 2;
    private static final int FAILED = 3;
    private static final int MAX_LINE = 4096;

    final Queue<CompletableFuture<ChunkBuffer>> pending = new ConcurrentLinkedQueue<>();
    private int state = LINE;
    private final byte[] line = new byte[MAX_LINE];
    private int lineLength;
    private final ValueSink value = new ValueSink(); // discards a value that found no buffer
    final String where; // host:port, for messages
    private int endBytes;

    Decoder(String where) {
      this.where = where;
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
          CompletableFuture<ChunkBuffer> f = next();
          f.completeExceptionally(new IOException("server error: " + rest));
        }
        default -> throw new IOException("not a RESP reply: " + printable(line, n));
      }
    }

    private void startValue(long length) {
      value.start(buffers.apply(length), length); // no buffer: read past it, answer a miss
      state = length == 0 ? BODY_END : BODY;
    }

    private CompletableFuture<ChunkBuffer> next() throws IOException {
      CompletableFuture<ChunkBuffer> f = pending.poll();
      if (f == null) {
        throw new IOException("a reply to no command");
      }
      return f;
    }

    private void complete(ChunkBuffer buffer) throws IOException {
      CompletableFuture<ChunkBuffer> f;
      try {
        f = next();
      } catch (IOException e) {
        if (buffer != null) {
          buffer.release();
        }
        throw e;
      }
      if (!f.complete(buffer) && buffer != null) {
        buffer.release(); // cannot happen: only this decoder completes with a value
      }
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
      state = FAILED;
      failAll(new IOException("connection to " + where + " closed"));
      ctx.fireChannelInactive();
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
      state = FAILED;
      failAll(cause instanceof IOException io ? io : new IOException(cause));
      ctx.close();
    }

    /** On the event loop: drops the value being received and fails every pending command. */
    private void failAll(IOException e) {
      value.release();
      failPending(e);
    }

    /** Fails every pending command; any thread. */
    void failPending(IOException e) {
      for (CompletableFuture<ChunkBuffer> f; (f = pending.poll()) != null; ) {
        f.completeExceptionally(e);
      }
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
