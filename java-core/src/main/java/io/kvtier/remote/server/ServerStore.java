package io.kvtier.remote.server;

import static io.kvtier.Checks.checkPositive;

import io.kvtier.DaemonThreads;
import io.kvtier.config.ConfigException;
import io.kvtier.config.Redaction;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.store.ErrorKind;
import io.kvtier.store.ErrorTally;
import io.kvtier.store.InFlight;
import io.kvtier.store.KvStore;
import io.kvtier.store.StoreCounters;
import io.kvtier.store.StoreStats;
import io.kvtier.wire.FrameDecoder;
import io.kvtier.wire.InFlightRequests;
import io.kvtier.wire.PipelinedConnection;
import io.kvtier.wire.Protocol;
import io.kvtier.wire.RejectedRequestException;
import io.kvtier.wire.Request;
import io.kvtier.wire.SlotReceiveAllocator;
import io.kvtier.wire.Tls;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.SocketChannel;
import io.netty.handler.ssl.SslContext;
import io.netty.handler.ssl.SslHandler;
import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.function.LongFunction;

/**
 * The remote tier on kvtier's own {@link CacheServer}: {@code remote_url: kvtier://[:secret@]host:
 * port}.
 *
 * <p>One {@link PipelinedConnection} (replies matched by request id); this class encodes requests
 * and decodes replies. Value bytes are read from the socket straight into pinned buffers from the
 * injected allocator and written from pinned buffers without copies. Like {@code RedisStore}: puts
 * never block (bounded in flight, drops counted), reads wait at most {@code timeoutMillis} (the
 * request's deadline; a value that comes later is released on arrival), at most {@link
 * #MAX_OUTSTANDING_REPLIES} replies are outstanding (more is refused and counted as {@link
 * ErrorKind#BACKLOG}), and a server that is absent, dies, stalls or speaks garbage turns into
 * misses and dropped puts, counted by kind. The store reconnects by itself in the background while
 * the server is away, {@link #FIRST_RECONNECT_MILLIS} after losing it, then backing off to {@link
 * #MAX_RECONNECT_MILLIS}.
 *
 * <p>Thread-safe.
 */
public final class ServerStore implements KvStore {
  /** Delay before the first reconnection attempt after the server went away, in milliseconds. */
  public static final long FIRST_RECONNECT_MILLIS = 100;

  /** Longest delay between two connection attempts while the server is away, in milliseconds. */
  public static final long MAX_RECONNECT_MILLIS = 2000;

  /**
   * Replies outstanding on the connection at most (a GET of n keys expects n); a request beyond is
   * refused as a miss, a dropped put or 0, and counted as {@link ErrorKind#BACKLOG}.
   */
  public static final int MAX_OUTSTANDING_REPLIES = 1 << 16;

  /**
   * Least time a connection attempt (the TCP connect, then HELLO) is given, however short {@code
   * remote_timeout_ms} is: an attempt happens once per connection, and the first one of a fresh
   * process, or to a server that has just started, loads classes on both sides while vLLM starts
   * beside them. A request still waits at most {@code remote_timeout_ms}.
   */
  public static final long MIN_CONNECT_MILLIS = 2000;

  private static final System.Logger LOG = System.getLogger(ServerStore.class.getName());

  private final String host;
  private final int port;
  private final byte[] secret;
  private final SslContext tls; // null: plain TCP
  private final long timeoutMillis;
  private final int queueBound;
  private final LongFunction<ChunkBuffer> buffers;
  private final long maxValueBytes;
  private final EventLoopGroup group =
      new MultiThreadIoEventLoopGroup(
          1, DaemonThreads.named("kvtier-server-client"), NioIoHandler.newFactory());
  private final PipelinedConnection connection;
  private final ErrorTally errors = new ErrorTally(LOG, "remote tier (kvtier server)");
  private final StoreCounters counters = new StoreCounters();
  private final InFlight inFlightPuts = new InFlight();
  private volatile boolean closed;

  /**
   * Connects to the server in {@code url}, waiting for the first attempt (at most about twice
   * {@code timeoutMillis}); if it does not answer by then, starts anyway while the attempt (given
   * at least {@link #MIN_CONNECT_MILLIS}) and later ones go on in the background.
   *
   * @param maxValueBytes largest value accepted from the server (the allocator's slot size)
   * @throws ConfigException if the URL is not {@code kvtier://host:port} or {@code
   *     kvtiers://host:port[?ca=FILE]}, or its CA file cannot be read
   */
  public ServerStore(
      String url,
      long timeoutMillis,
      int queueBound,
      long maxValueBytes,
      LongFunction<ChunkBuffer> buffers) {
    ServerUrl parsed;
    try {
      parsed = ServerUrl.parse(url);
    } catch (IllegalArgumentException e) {
      throw new ConfigException("remote_url=" + e.getMessage());
    }
    this.host = parsed.host();
    this.port = parsed.port();
    this.secret = parsed.secret();
    try {
      this.tls = parsed.tls() ? Tls.client(Tls.trust(parsed.ca())) : null;
    } catch (IllegalArgumentException e) {
      throw new ConfigException("remote_url=" + Redaction.url(url) + ": " + e.getMessage());
    }
    this.timeoutMillis = checkPositive(timeoutMillis, "timeoutMillis");
    this.queueBound = checkPositive(queueBound, "queueBound");
    this.maxValueBytes = checkPositive(maxValueBytes, "maxValueBytes");
    this.buffers = buffers;
    this.connection =
        new PipelinedConnection(
            () -> InetSocketAddress.createUnresolved(host, port),
            group,
            new PipelinedConnection.Settings(
                InFlightRequests.ReplyOrder.BY_ID,
                Math.max(timeoutMillis, MIN_CONNECT_MILLIS),
                Math.max(timeoutMillis, MIN_CONNECT_MILLIS),
                MAX_OUTSTANDING_REPLIES,
                TimeUnit.MILLISECONDS.toNanos(FIRST_RECONNECT_MILLIS),
                TimeUnit.MILLISECONDS.toNanos(MAX_RECONNECT_MILLIS),
                TimeUnit.MILLISECONDS.toNanos(FIRST_RECONNECT_MILLIS)),
            new Kvtier(),
            System::nanoTime);
    try {
      connection.connectInBackground().get(2 * timeoutMillis + 1000, TimeUnit.MILLISECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (ExecutionException | java.util.concurrent.TimeoutException e) {
      // counted by connectFailed, or still under way: the background attempts go on
    }
  }

  /** Whether requests can be sent now. */
  public boolean connected() {
    return connection.isConnected();
  }

  @Override
  public long timeouts() {
    return errors.count(ErrorKind.TIMEOUT);
  }

  @Override
  public Medium medium() {
    return Medium.REMOTE;
  }

  @Override
  public boolean contains(ChunkKey key) {
    return prefixLength(new ChunkKey[] {key}) == 1;
  }

  /** {@link #prefixLengthAsync}, waited for (at most {@code timeoutMillis}). */
  @Override
  public int prefixLength(ChunkKey[] keys) {
    return prefixLengthAsync(keys).join();
  }

  /**
   * Sends {@code EXISTS} and returns at once; the future completes with the server's answer, or 0
   * (counted) when the server fails or does not answer within {@code timeoutMillis}. Never
   * completes exceptionally.
   */
  @Override
  public CompletableFuture<Integer> prefixLengthAsync(ChunkKey[] keys) {
    checkOpen();
    if (keys.length == 0) {
      return CompletableFuture.completedFuture(0);
    }
    // The server takes at most MAX_BATCH keys a frame: a longer prompt is asked batch by batch,
    // the next one only while every key so far is there.
    ChunkKey[] batch =
        keys.length <= Protocol.MAX_BATCH ? keys : Arrays.copyOf(keys, Protocol.MAX_BATCH);
    Request<Integer> r = new Request<>(Integer.class, 1);
    if (!send(r, timeoutMillis, (alloc, id) -> keyList(alloc, Protocol.EXISTS, id, batch))) {
      return CompletableFuture.completedFuture(0);
    }
    return r.reply(0)
        .handle(
            (n, err) -> {
              if (err == null) {
                return n;
              }
              recordFailure("EXISTS", err);
              return 0;
            })
        .thenCompose(
            n ->
                n < batch.length || batch.length == keys.length
                    ? CompletableFuture.completedFuture(n)
                    : prefixLengthAsync(Arrays.copyOfRange(keys, batch.length, keys.length))
                        .thenApply(rest -> n + rest));
  }

  /**
   * Sends {@code r}; false if it was refused (a refusal for want of room is counted as {@link
   * ErrorKind#BACKLOG}; one while disconnected is not: the loss was counted).
   */
  private boolean send(Request<?> r, long deadlineMillis, PipelinedConnection.Encoder encoder) {
    try {
      connection.send(r, deadlineMillis, encoder);
      return true;
    } catch (RejectedRequestException e) {
      if (e.reason() == RejectedRequestException.Reason.BACKLOG) {
        errors.record(ErrorKind.BACKLOG, e.getMessage(), null);
      }
      return false;
    }
  }

  /** Counts a request's failure by its kind. */
  private void recordFailure(String what, Throwable err) {
    Throwable cause = err instanceof CompletionException ? err.getCause() : err;
    if (cause instanceof java.util.concurrent.TimeoutException) {
      errors.record(ErrorKind.TIMEOUT, what + " took longer than " + timeoutMillis + " ms", null);
    } else {
      errors.record(ErrorKind.REMOTE_FAILED, what + " failed: " + cause, null);
    }
  }

  private static ByteBuf keyList(ByteBufAllocator alloc, byte op, int id, ChunkKey[] keys) {
    ByteBuf out = alloc.buffer(Protocol.HEADER_BYTES + 2 + keys.length * Protocol.KEY_BYTES);
    Protocol.header(out, op, id, 2 + (long) keys.length * Protocol.KEY_BYTES);
    out.writeShortLE(keys.length);
    for (ChunkKey k : keys) {
      Protocol.key(out, k);
    }
    return out;
  }

  /**
   * The reply's value, or null (counted) if it failed or timed out; the deadline bounds the wait.
   */
  private <T> T await(CompletableFuture<T> f, String what) {
    try {
      return f.get();
    } catch (ExecutionException e) {
      recordFailure(what, e.getCause());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      if (!f.cancel(false) && !f.isCompletedExceptionally() && f.join() instanceof ChunkBuffer b) {
        b.release(); // it came just now: nobody takes it
      }
    }
    return null;
  }

  @Override
  public boolean put(ChunkKey key, ChunkBuffer chunk) {
    checkOpen();
    if (!connection.isConnected()) {
      counters.droppedPuts.increment();
      return false;
    }
    if (inFlightPuts.increment() > queueBound) {
      inFlightPuts.decrement();
      counters.droppedPuts.increment();
      return false;
    }
    Request<Byte> r = new Request<>(Byte.class, 1);
    io.netty.channel.ChannelFuture written;
    try {
      // No deadline: a put ends with its PUT_DONE or with the connection (bounded by queueBound).
      written =
          connection.send(
              r,
              0,
              (alloc, id) -> {
                ByteBuf head = alloc.buffer(Protocol.HEADER_BYTES + Protocol.KEY_BYTES);
                Protocol.header(head, Protocol.PUT, id, Protocol.KEY_BYTES + chunk.length());
                Protocol.key(head, key);
                chunk.retain(); // released once the socket has the bytes (or the write failed)
                return Unpooled.wrappedBuffer(
                    head, Unpooled.wrappedBuffer(chunk.segment().asByteBuffer()));
              });
    } catch (RejectedRequestException e) {
      if (e.reason() == RejectedRequestException.Reason.BACKLOG) {
        errors.record(ErrorKind.BACKLOG, e.getMessage(), null);
      }
      inFlightPuts.decrement();
      counters.droppedPuts.increment();
      return false;
    }
    CompletableFuture<Void> released = new CompletableFuture<>();
    written.addListener(
        f -> {
          chunk.release();
          released.complete(null);
        });
    CompletableFuture<Void> counted =
        r.reply(0)
            .handle(
                (status, err) -> {
                  if (err != null || status == null || status == Protocol.DROPPED) {
                    counters.droppedPuts.increment();
                  } else if (status == Protocol.DUPLICATE) {
                    counters.duplicatePuts.increment();
                  } else {
                    counters.puts.increment();
                  }
                  return null;
                });
    // Last, once the outcome is counted and the chunk released (the reply may be read before the
    // write's listener runs): awaitIdle then sees both.
    CompletableFuture.allOf(counted, released).whenComplete((v, e) -> inFlightPuts.decrement());
    return true;
  }

  @Override
  public ChunkBuffer get(ChunkKey key) {
    return getBatch(new ChunkKey[] {key})[0];
  }

  /**
   * One {@code GET} of every key; waits for the replies at most {@code timeoutMillis} (the
   * request's deadline). A key whose value did not come in time is a miss (counted), and its value,
   * should it come later, is released.
   */
  @Override
  public ChunkBuffer[] getBatch(ChunkKey[] keys) {
    checkOpen();
    ChunkBuffer[] out = new ChunkBuffer[keys.length];
    // At most MAX_BATCH keys a frame; every frame is sent before the first reply is awaited.
    int frames = (keys.length + Protocol.MAX_BATCH - 1) / Protocol.MAX_BATCH;
    List<Request<ChunkBuffer>> sent = new ArrayList<>(frames);
    for (int from = 0; from < keys.length; from += Protocol.MAX_BATCH) {
      ChunkKey[] batch =
          Arrays.copyOfRange(keys, from, Math.min(keys.length, from + Protocol.MAX_BATCH));
      Request<ChunkBuffer> r = new Request<>(ChunkBuffer.class, batch.length);
      sent.add(
          send(r, timeoutMillis, (alloc, id) -> keyList(alloc, Protocol.GET, id, batch))
              ? r
              : null);
    }
    for (int i = 0; i < keys.length; i++) {
      Request<ChunkBuffer> r = sent.get(i / Protocol.MAX_BATCH);
      if (r != null) {
        CompletableFuture<ChunkBuffer> reply = r.reply(i % Protocol.MAX_BATCH);
        out[i] = Thread.currentThread().isInterrupted() ? abandon(reply) : await(reply, "GET");
      }
      (out[i] == null ? counters.misses : counters.hits).increment();
    }
    return out;
  }

  /** Gives up on a reply: it ends now, or its value, already there, is released. */
  private static ChunkBuffer abandon(CompletableFuture<ChunkBuffer> f) {
    if (!f.cancel(false) && !f.isCompletedExceptionally()) {
      ChunkBuffer b = f.join();
      if (b != null) {
        b.release();
      }
    }
    return null;
  }

  @Override
  public boolean pin(ChunkKey key) {
    return contains(key);
  }

  @Override
  public void unpin(ChunkKey key) {}

  @Override
  public boolean remove(ChunkKey key) {
    checkOpen();
    Request<Integer> r = new Request<>(Integer.class, 1);
    boolean sent =
        send(
            r,
            timeoutMillis,
            (alloc, id) -> {
              ByteBuf out = alloc.buffer(Protocol.HEADER_BYTES + Protocol.KEY_BYTES);
              Protocol.header(out, Protocol.DELETE, id, Protocol.KEY_BYTES);
              Protocol.key(out, key);
              return out;
            });
    Integer removed = sent ? await(r.reply(0), "DELETE") : null;
    return removed != null && removed == 1;
  }

  @Override
  public StoreStats stats() {
    return counters.snapshot(-1, -1, errors.counts());
  }

  /** Errors by kind. */
  public Map<ErrorKind, Long> errorCounts() {
    return errors.counts();
  }

  /** Requests waiting for replies, puts in flight included (timed-out ones are forgotten). */
  public int pendingRequests() {
    return connection.pendingRequests();
  }

  /** Puts sent and not yet acknowledged. */
  public int inFlightPuts() {
    return inFlightPuts.get();
  }

  /**
   * Waits until every put sent has been acknowledged or failed (its outcome counted); an
   * acknowledged chunk is stored on the server. The caller's buffer is released once the socket has
   * taken its bytes, which is before the server can answer. Woken by the last reply; does not poll.
   */
  @Override
  public boolean awaitIdle(long timeoutMillis) throws InterruptedException {
    return inFlightPuts.awaitZero(timeoutMillis);
  }

  /**
   * Gives puts in flight up to {@code timeoutMillis} to be acknowledged, then closes the connection
   * (what is still pending fails) and stops the event loop. Idempotent.
   */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    if (connection.isConnected()) {
      try {
        inFlightPuts.awaitZero(timeoutMillis);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
    connection.close();
    group.shutdownGracefully(0, 1, TimeUnit.SECONDS).awaitUninterruptibly();
  }

  private void checkOpen() {
    if (closed) {
      throw new IllegalStateException("ServerStore is closed");
    }
  }

  @Override
  public String toString() {
    return "ServerStore(" + (tls == null ? "kvtier://" : "kvtiers://") + host + ":" + port + ")";
  }

  /** kvtier's protocol on the connection: the HELLO handshake and the reply decoder. */
  private final class Kvtier implements PipelinedConnection.Handler {
    @Override
    public SlotReceiveAllocator.SlotReceiver initChannel(
        SocketChannel ch, InFlightRequests requests) {
      ClientHandler handler = new ClientHandler(requests);
      FrameDecoder decoder = new FrameDecoder(handler, maxValueBytes);
      if (tls == null) {
        ch.pipeline().addLast(decoder, handler);
        return decoder;
      }
      // Over TLS the socket's bytes are ciphertext: they go through the SslHandler's buffers and
      // the decoder copies the plaintext into the value's slot.
      SslHandler ssl = tls.newHandler(ch.alloc(), host, port);
      ssl.handshakeFuture()
          .addListener(
              f -> {
                if (!f.isSuccess()) {
                  errors.record(
                      ErrorKind.UNAVAILABLE,
                      "TLS handshake with kvtier server "
                          + host
                          + ":"
                          + port
                          + " failed: "
                          + Tls.rootMessage(f.cause()),
                      null);
                }
              });
      ch.pipeline().addLast(ssl, decoder, handler);
      return () -> null;
    }

    @Override
    public PipelinedConnection.Handshake handshake() {
      return new PipelinedConnection.Handshake(
          new Request<>(Integer.class, 1),
          (alloc, id) -> {
            ByteBuf out = alloc.buffer();
            Protocol.header(out, Protocol.HELLO, id, 8 + secret.length);
            out.writeIntLE(Protocol.MAGIC);
            out.writeShortLE(Protocol.VERSION);
            out.writeShortLE(secret.length);
            out.writeBytes(secret);
            return out;
          });
    }

    @Override
    public void connected(String where) {
      LOG.log(System.Logger.Level.INFO, "remote tier connected to kvtier server " + where);
    }

    @Override
    public void connectFailed(java.io.IOException error) {
      errors.record(
          ErrorKind.UNAVAILABLE,
          "cannot connect to kvtier server " + host + ":" + port + " (" + error + ")",
          null);
    }

    @Override
    public void disconnected(String where) {
      errors.record(ErrorKind.UNAVAILABLE, "connection to " + where + " lost", null);
    }
  }

  /** Replies of the server on one connection. Confined to its event loop. */
  private final class ClientHandler extends ChannelInboundHandlerAdapter
      implements FrameDecoder.Listener {
    private final InFlightRequests requests;
    private int bulkIndex;

    ClientHandler(InFlightRequests requests) {
      this.requests = requests;
    }

    @Override
    public void onFrame(ChannelHandlerContext ctx, byte op, int id, ByteBuf payload) {
      switch (op) {
        case Protocol.HELLO_OK -> requests.answer(id, 0, 0);
        case Protocol.EXISTS_N -> requests.answer(id, 0, payload.readUnsignedShortLE());
        case Protocol.PUT_DONE -> requests.answer(id, 0, payload.readByte());
        case Protocol.DELETED -> requests.answer(id, 0, (int) payload.readByte());
        case Protocol.MISS -> requests.answer(id, payload.readUnsignedShortLE(), null);
        case Protocol.ERROR -> {
          short code = payload.readShortLE();
          String msg = Protocol.string(payload);
          errors.record(ErrorKind.SERVER_ERROR, "code " + code + ": " + msg, null);
          requests.fail(id, new java.io.IOException("server error " + code + ": " + msg));
        }
        default ->
            errors.record(ErrorKind.PROTOCOL, "unexpected op " + op + " from the server", null);
      }
    }

    @Override
    public ChunkBuffer onBulkStart(
        ChannelHandlerContext ctx, byte op, int id, ByteBuf prefix, long valueBytes)
        throws FrameDecoder.ProtocolException {
      if (op != Protocol.VALUE) {
        throw new FrameDecoder.ProtocolException(Protocol.ERR_PROTOCOL, "unexpected PUT");
      }
      bulkIndex = prefix.readUnsignedShortLE();
      if (!requests.wants(id, bulkIndex)) {
        return null; // nobody waits (an abandoned request): discard the bytes
      }
      ChunkBuffer b;
      try {
        b = buffers.apply(valueBytes);
      } catch (IllegalArgumentException tooLarge) {
        b = null;
      }
      if (b == null) {
        errors.record(
            ErrorKind.NO_BUFFER, "no free buffer for a " + valueBytes + "-byte value", null);
      }
      return b;
    }

    @Override
    public void onBulkEnd(ChannelHandlerContext ctx, byte op, int id, ChunkBuffer target) {
      // A miss if discarded; released there if its request timed out while it was arriving.
      requests.answer(id, bulkIndex, target);
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
      errors.record(ErrorKind.REMOTE_FAILED, "connection error: " + cause, null);
      ctx.close();
    }
  }
}
