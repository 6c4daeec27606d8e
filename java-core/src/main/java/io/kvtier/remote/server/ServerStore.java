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
import io.kvtier.wire.Protocol;
import io.kvtier.wire.SlotReceiveAllocator;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.nio.NioIoHandler;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.LongFunction;

/**
 * The remote tier on kvtier's own {@link CacheServer}: {@code remote_url: kvtier://[:secret@]host:
 * port}.
 *
 * <p>One connection; requests are pipelined and matched to replies by id. Value bytes are read from
 * the socket straight into pinned buffers from the injected allocator and written from pinned
 * buffers without copies. Like {@code RedisStore}: puts never block (bounded in flight, drops
 * counted), reads wait at most {@code timeoutMillis} and late replies are released on arrival, and
 * a server that is absent, dies, stalls or speaks garbage turns into misses and dropped puts,
 * counted by kind. The store reconnects by itself every {@link #RECONNECT_SECONDS} while the server
 * is away.
 *
 * <p>Thread-safe.
 */
public final class ServerStore implements KvStore {
  /** Seconds between connection attempts while the server is unreachable. */
  public static final long RECONNECT_SECONDS = 2;

  private static final System.Logger LOG = System.getLogger(ServerStore.class.getName());

  private final String host;
  private final int port;
  private final byte[] secret;
  private final long timeoutMillis;
  private final int queueBound;
  private final LongFunction<ChunkBuffer> buffers;
  private final long maxValueBytes;
  private final EventLoopGroup group =
      new MultiThreadIoEventLoopGroup(1, NioIoHandler.newFactory());
  private final ScheduledExecutorService reconnector;
  private final ErrorTally errors = new ErrorTally(LOG, "remote tier (kvtier server)");
  private final StoreCounters counters = new StoreCounters();
  private final AtomicInteger nextId = new AtomicInteger(1);
  private final InFlight inFlightPuts = new InFlight();
  private final Map<Integer, Object> pending = new ConcurrentHashMap<>(); // id -> futures
  private volatile Channel channel; // null while disconnected
  private volatile boolean closed;

  /**
   * Connects to the server in {@code url}; if it does not answer, starts anyway and retries.
   *
   * @param maxValueBytes largest value accepted from the server (the allocator's slot size)
   * @throws ConfigException if the URL is not {@code kvtier://host:port}
   */
  public ServerStore(
      String url,
      long timeoutMillis,
      int queueBound,
      long maxValueBytes,
      LongFunction<ChunkBuffer> buffers) {
    URI uri;
    try {
      uri = URI.create(url);
    } catch (IllegalArgumentException e) {
      throw new ConfigException(
          "remote_url="
              + Redaction.url(url)
              + " is malformed: "
              + Redaction.text(e.getMessage(), url));
    }
    if (!"kvtier".equals(uri.getScheme()) || uri.getHost() == null || uri.getPort() < 0) {
      throw new ConfigException(
          "remote_url=" + Redaction.url(url) + " is not of the form kvtier://[:secret@]host:port");
    }
    this.host = uri.getHost();
    this.port = uri.getPort();
    String info = uri.getUserInfo();
    String s = info == null ? "" : info.substring(info.indexOf(':') + 1);
    this.secret = s.getBytes(StandardCharsets.UTF_8);
    this.timeoutMillis = checkPositive(timeoutMillis, "timeoutMillis");
    this.queueBound = checkPositive(queueBound, "queueBound");
    this.maxValueBytes = checkPositive(maxValueBytes, "maxValueBytes");
    this.buffers = buffers;
    this.reconnector =
        Executors.newSingleThreadScheduledExecutor(DaemonThreads.named("kvtier-server-connect"));
    tryConnect();
    reconnector.scheduleWithFixedDelay(
        () -> {
          if (channel == null && !closed) {
            tryConnect();
          }
        },
        RECONNECT_SECONDS,
        RECONNECT_SECONDS,
        TimeUnit.SECONDS);
  }

  private void tryConnect() {
    try {
      ClientHandler handler = new ClientHandler();
      Channel ch =
          SlotReceiveAllocator.client(
                  group,
                  timeoutMillis,
                  c -> {
                    FrameDecoder decoder = new FrameDecoder(handler, maxValueBytes);
                    c.pipeline().addLast(decoder, handler);
                    return decoder;
                  })
              .connect(host, port)
              .sync()
              .channel();
      int id = nextId.getAndIncrement();
      CompletableFuture<Integer> hello = new CompletableFuture<>();
      pending.put(id, hello);
      ByteBuf out = ch.alloc().buffer();
      Protocol.header(out, Protocol.HELLO, id, 8 + secret.length);
      out.writeIntLE(Protocol.MAGIC);
      out.writeShortLE(Protocol.VERSION);
      out.writeShortLE(secret.length);
      out.writeBytes(secret);
      ch.writeAndFlush(out);
      hello.get(timeoutMillis, TimeUnit.MILLISECONDS);
      channel = ch;
      LOG.log(
          System.Logger.Level.INFO, "remote tier connected to kvtier server " + host + ":" + port);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (Exception e) {
      Throwable cause = e instanceof ExecutionException ? e.getCause() : e;
      errors.record(
          ErrorKind.UNAVAILABLE,
          "cannot connect to kvtier server " + host + ":" + port + " (" + cause + ")",
          null);
    }
  }

  /** Whether requests can be sent now. */
  public boolean connected() {
    Channel c = channel;
    return c != null && c.isActive();
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
    Channel ch = channel;
    if (ch == null || keys.length == 0) {
      return CompletableFuture.completedFuture(0);
    }
    int id = nextId.getAndIncrement();
    CompletableFuture<Integer> reply = new CompletableFuture<>();
    pending.put(id, reply);
    ch.writeAndFlush(keyList(ch, Protocol.EXISTS, id, keys));
    return reply
        .orTimeout(timeoutMillis, TimeUnit.MILLISECONDS)
        .handle(
            (n, err) -> {
              if (err == null) {
                return n;
              }
              pending.remove(id);
              Throwable cause = err instanceof CompletionException ? err.getCause() : err;
              if (cause instanceof TimeoutException) {
                errors.record(
                    ErrorKind.TIMEOUT, "EXISTS took longer than " + timeoutMillis + " ms", null);
              } else {
                errors.record(ErrorKind.REMOTE_FAILED, "EXISTS failed: " + cause, null);
              }
              return 0;
            });
  }

  private static ByteBuf keyList(Channel ch, byte op, int id, ChunkKey[] keys) {
    ByteBuf out = ch.alloc().buffer(Protocol.HEADER_BYTES + 2 + keys.length * Protocol.KEY_BYTES);
    Protocol.header(out, op, id, 2 + (long) keys.length * Protocol.KEY_BYTES);
    out.writeShortLE(keys.length);
    for (ChunkKey k : keys) {
      Protocol.key(out, k);
    }
    return out;
  }

  private <T> T await(CompletableFuture<T> f, int id, String what) {
    try {
      return f.get(timeoutMillis, TimeUnit.MILLISECONDS);
    } catch (TimeoutException e) {
      errors.record(ErrorKind.TIMEOUT, what + " took longer than " + timeoutMillis + " ms", null);
    } catch (ExecutionException e) {
      errors.record(ErrorKind.REMOTE_FAILED, what + " failed: " + e.getCause(), null);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    pending.remove(id);
    return null;
  }

  @Override
  public boolean put(ChunkKey key, ChunkBuffer chunk) {
    checkOpen();
    Channel ch = channel;
    if (ch == null) {
      counters.droppedPuts.increment();
      return false;
    }
    if (inFlightPuts.increment() > queueBound) {
      inFlightPuts.decrement();
      counters.droppedPuts.increment();
      return false;
    }
    chunk.retain();
    int id = nextId.getAndIncrement();
    CompletableFuture<Byte> done = new CompletableFuture<>();
    pending.put(id, done);
    CompletableFuture<Void> counted =
        done.handle(
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
    CompletableFuture<Void> released = new CompletableFuture<>();
    // Last, once the outcome is counted and the chunk released (the reply may be read before the
    // write's listener runs): awaitIdle then sees both.
    CompletableFuture.allOf(counted, released).whenComplete((v, e) -> inFlightPuts.decrement());
    ByteBuf head = ch.alloc().buffer(Protocol.HEADER_BYTES + Protocol.KEY_BYTES);
    Protocol.header(head, Protocol.PUT, id, Protocol.KEY_BYTES + chunk.length());
    Protocol.key(head, key);
    ch.writeAndFlush(
            Unpooled.wrappedBuffer(head, Unpooled.wrappedBuffer(chunk.segment().asByteBuffer())))
        .addListener(
            f -> {
              chunk.release(); // the socket has the bytes (or the write failed)
              released.complete(null);
              if (!f.isSuccess()) {
                pending.remove(id);
                done.completeExceptionally(f.cause());
              }
            });
    return true;
  }

  @Override
  public ChunkBuffer get(ChunkKey key) {
    return getBatch(new ChunkKey[] {key})[0];
  }

  @Override
  @SuppressWarnings({"unchecked", "rawtypes"}) // an array of futures
  public ChunkBuffer[] getBatch(ChunkKey[] keys) {
    checkOpen();
    ChunkBuffer[] out = new ChunkBuffer[keys.length];
    Channel ch = channel;
    if (ch == null || keys.length == 0) {
      counters.misses.add(keys.length);
      return out;
    }
    int id = nextId.getAndIncrement();
    CompletableFuture<ChunkBuffer>[] replies = new CompletableFuture[keys.length];
    for (int i = 0; i < keys.length; i++) {
      replies[i] = new CompletableFuture<>();
    }
    pending.put(id, new GetRequest(replies));
    ch.writeAndFlush(keyList(ch, Protocol.GET, id, keys));
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
    boolean gaveUp = false;
    for (int i = 0; i < keys.length; i++) {
      try {
        out[i] = replies[i].get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
      } catch (TimeoutException e) {
        gaveUp = true;
        errors.record(ErrorKind.TIMEOUT, "GET took longer than " + timeoutMillis + " ms", null);
      } catch (ExecutionException e) {
        errors.record(ErrorKind.REMOTE_FAILED, "GET failed: " + e.getCause(), null);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        gaveUp = true;
      }
      if (gaveUp && out[i] == null) {
        // Forget the request: values still on their way are discarded unread, and one already
        // being received is released when it lands. Nothing waits on a silent server forever.
        pending.remove(id);
        replies[i].whenComplete((b, err) -> release(b));
      }
      (out[i] == null ? counters.misses : counters.hits).increment();
    }
    return out;
  }

  private static void release(ChunkBuffer b) {
    if (b != null) {
      b.release();
    }
  }

  /** The per-key futures of one GET. */
  private record GetRequest(CompletableFuture<ChunkBuffer>[] replies) {}

  @Override
  public boolean pin(ChunkKey key) {
    return contains(key);
  }

  @Override
  public void unpin(ChunkKey key) {}

  @Override
  public boolean remove(ChunkKey key) {
    checkOpen();
    Channel ch = channel;
    if (ch == null) {
      return false;
    }
    int id = nextId.getAndIncrement();
    CompletableFuture<Integer> reply = new CompletableFuture<>();
    pending.put(id, reply);
    ByteBuf out = ch.alloc().buffer(Protocol.HEADER_BYTES + Protocol.KEY_BYTES);
    Protocol.header(out, Protocol.DELETE, id, Protocol.KEY_BYTES);
    Protocol.key(out, key);
    ch.writeAndFlush(out);
    Integer removed = await(reply, id, "DELETE");
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

  /** Requests waiting for replies, puts in flight included. */
  public int pendingRequests() {
    return pending.size();
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

  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    reconnector.shutdownNow();
    awaitPuts();
    Channel ch = channel;
    if (ch != null) {
      ch.close().awaitUninterruptibly();
    }
    group.shutdownGracefully(0, 1, TimeUnit.SECONDS).awaitUninterruptibly();
    failAll(new IllegalStateException("closed"));
  }

  /** Gives puts in flight up to the timeout to be acknowledged before the connection closes. */
  private void awaitPuts() {
    if (channel == null) {
      return;
    }
    try {
      inFlightPuts.awaitZero(timeoutMillis);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  private void failAll(Throwable why) {
    for (Integer id : pending.keySet()) {
      Object p = pending.remove(id);
      if (p instanceof GetRequest g) {
        for (CompletableFuture<ChunkBuffer> f : g.replies()) {
          f.completeExceptionally(why);
        }
      } else if (p instanceof CompletableFuture<?> f) {
        f.completeExceptionally(why);
      }
    }
  }

  private void checkOpen() {
    if (closed) {
      throw new IllegalStateException("ServerStore is closed");
    }
  }

  @Override
  public String toString() {
    return "ServerStore(kvtier://" + host + ":" + port + ")";
  }

  /** Replies of the server. Runs on the event loop. */
  private final class ClientHandler extends ChannelInboundHandlerAdapter
      implements FrameDecoder.Listener {
    @Override
    @SuppressWarnings("unchecked")
    public void onFrame(ChannelHandlerContext ctx, byte op, int id, ByteBuf payload) {
      switch (op) {
        case Protocol.HELLO_OK -> complete(id, 0);
        case Protocol.EXISTS_N -> complete(id, payload.readUnsignedShortLE());
        case Protocol.PUT_DONE -> complete(id, payload.readByte());
        case Protocol.DELETED -> complete(id, (int) payload.readByte());
        case Protocol.MISS -> {
          int index = payload.readUnsignedShortLE();
          if (pending.get(id) instanceof GetRequest g && index < g.replies().length) {
            g.replies()[index].complete(null);
            finishIfDone(id, g);
          }
        }
        case Protocol.ERROR -> {
          short code = payload.readShortLE();
          String msg = Protocol.string(payload);
          errors.record(ErrorKind.SERVER_ERROR, "code " + code + ": " + msg, null);
          Object p = pending.remove(id);
          if (p instanceof CompletableFuture<?> f) {
            f.completeExceptionally(new IllegalStateException(msg));
          }
        }
        default ->
            errors.record(ErrorKind.PROTOCOL, "unexpected op " + op + " from the server", null);
      }
    }

    @SuppressWarnings("unchecked")
    private void complete(int id, Object value) {
      Object p = pending.remove(id);
      if (p instanceof CompletableFuture<?> f) {
        ((CompletableFuture<Object>) f).complete(value);
      }
    }

    private void finishIfDone(int id, GetRequest g) {
      for (CompletableFuture<ChunkBuffer> f : g.replies()) {
        if (!f.isDone()) {
          return;
        }
      }
      pending.remove(id, g);
    }

    private GetRequest bulkRequest;
    private int bulkIndex;

    @Override
    public ChunkBuffer onBulkStart(
        ChannelHandlerContext ctx, byte op, int id, ByteBuf prefix, long valueBytes)
        throws FrameDecoder.ProtocolException {
      if (op != Protocol.VALUE) {
        throw new FrameDecoder.ProtocolException(Protocol.ERR_PROTOCOL, "unexpected PUT");
      }
      bulkIndex = prefix.readUnsignedShortLE();
      bulkRequest = pending.get(id) instanceof GetRequest g ? g : null;
      if (bulkRequest == null || bulkIndex >= bulkRequest.replies().length) {
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
      GetRequest g = bulkRequest;
      bulkRequest = null;
      if (g == null) {
        release(target);
        return;
      }
      if (!g.replies()[bulkIndex].complete(target)) {
        release(target); // completed elsewhere (connection failure raced): not ours to keep
      }
      finishIfDone(id, g);
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) throws Exception {
      if (channel == ctx.channel()) {
        channel = null;
        errors.record(ErrorKind.UNAVAILABLE, "connection to " + host + ":" + port + " lost", null);
      }
      failAll(new IllegalStateException("connection lost"));
      super.channelInactive(ctx);
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
      errors.record(ErrorKind.REMOTE_FAILED, "connection error: " + cause, null);
      ctx.close();
    }
  }
}
