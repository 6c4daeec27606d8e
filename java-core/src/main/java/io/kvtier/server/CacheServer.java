package io.kvtier.server;

import static io.kvtier.Checks.checkPositive;

import io.kvtier.DaemonThreads;
import io.kvtier.config.KvTierConfig;
import io.kvtier.config.Redaction;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.memory.SizeClassPools;
import io.kvtier.store.TieredStore;
import io.kvtier.store.Tiers;
import io.kvtier.wire.FrameDecoder;
import io.kvtier.wire.Protocol;
import io.kvtier.wire.SlotReceiveAllocator;
import io.kvtier.wire.Tls;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollServerSocketChannel;
import io.netty.channel.group.ChannelGroup;
import io.netty.channel.group.DefaultChannelGroup;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.handler.ssl.NotSslRecordException;
import io.netty.handler.ssl.SslContext;
import io.netty.util.concurrent.GlobalEventExecutor;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.LongAdder;

/**
 * kvtier's cache server: one process that several vLLM instances point {@code remote_url:
 * kvtier://host:port} at, so they reuse each other's prefixes without Redis.
 *
 * <p>Storage is the engine's own: a {@link CpuStore} over {@link SizeClassPools} (each value in a
 * slot of its size class, about 6 % rounding at most, every class under one memory budget) with
 * eviction, optionally in front of a {@link DiskStore} it spills to. The wire protocol is {@link
 * Protocol}; value bytes go from the socket straight into their slots and back out of them without
 * further copies. GETs and EXISTSes run on a small worker pool (a disk read must not stall the
 * event loop) with a bounded queue ({@link #WORKER_QUEUE}): one that finds it full is answered at
 * once as misses (GET) or 0 (EXISTS) and counted ({@link #rejectedRequests()}), so a client never
 * waits on a server that cannot keep up.
 *
 * <p>Start: {@code kvtier-server --port 7070 --memory-gb 8} (see {@link #main} and the README).
 * Binds 127.0.0.1 unless told otherwise; {@code --secret-file} makes every client prove it knows
 * the secret. Thread-safe; {@link #close()} stops it.
 */
public final class CacheServer implements AutoCloseable {
  private static final System.Logger LOG = System.getLogger(CacheServer.class.getName());

  /** Threads copying values from memory down to disk. */
  private static final int COPY_DOWN_THREADS = 2;

  /** Copy-downs queued at most; more are dropped and counted. */
  private static final int COPY_DOWN_QUEUE = 1024;

  /** Threads writing values to disk. */
  private static final int DISK_WRITE_THREADS = 2;

  /** Threads reading values from disk. */
  private static final int DISK_READ_THREADS = 4;

  /** Disk writes queued at most; more are dropped and counted. */
  private static final int DISK_QUEUE = 256;

  /**
   * GETs and EXISTSes waiting for a worker at most; one beyond is refused at once: a GET is
   * answered with a MISS for every key, an EXISTS with 0, and {@link #rejectedRequests()} counts
   * it.
   */
  static final int WORKER_QUEUE = 1024;

  /** Server settings; see {@link #main} for the flags. */
  public record Settings(
      String bindHost,
      int port,
      long memoryBytes,
      long maxValueBytes,
      Path diskPath,
      long diskBytes,
      byte[] secret,
      int workerThreads,
      Path tlsCertificate,
      Path tlsKey,
      int statsPort) {
    /** No stats port. */
    public static final int NO_STATS = -1;

    /** Validates sizes and ports; TLS takes a certificate and a key, or neither. */
    public Settings {
      checkPositive(memoryBytes, "memoryBytes");
      checkPositive(maxValueBytes, "maxValueBytes");
      checkPositive(workerThreads, "workerThreads");
      if (port < 0 || port > 65535) {
        throw new IllegalArgumentException("port must be in [0, 65535], got " + port);
      }
      if (statsPort < NO_STATS || statsPort > 65535) {
        throw new IllegalArgumentException("statsPort must be in [-1, 65535], got " + statsPort);
      }
      if ((tlsCertificate == null) != (tlsKey == null)) {
        throw new IllegalArgumentException(
            "TLS needs both a certificate (--tls-cert) and its private key (--tls-key)");
      }
    }

    /** Plain TCP, no stats port. */
    public Settings(
        String bindHost,
        int port,
        long memoryBytes,
        long maxValueBytes,
        Path diskPath,
        long diskBytes,
        byte[] secret,
        int workerThreads) {
      this(
          bindHost,
          port,
          memoryBytes,
          maxValueBytes,
          diskPath,
          diskBytes,
          secret,
          workerThreads,
          null,
          null,
          NO_STATS);
    }

    /** These settings over TLS with {@code certificate} and its private {@code key} (PEM). */
    public Settings withTls(Path certificate, Path key) {
      return new Settings(
          bindHost,
          port,
          memoryBytes,
          maxValueBytes,
          diskPath,
          diskBytes,
          secret,
          workerThreads,
          certificate,
          key,
          statsPort);
    }

    /** These settings with Prometheus stats on 127.0.0.1:{@code port} (0: any free port). */
    public Settings withStatsPort(int port) {
      return new Settings(
          bindHost,
          this.port,
          memoryBytes,
          maxValueBytes,
          diskPath,
          diskBytes,
          secret,
          workerThreads,
          tlsCertificate,
          tlsKey,
          port);
    }

    /**
     * The tiers this server keeps values in, in kvtier's configuration keys: its memory as the CPU
     * tier (W-TinyLFU eviction) and, with a disk path, a disk tier under it.
     */
    KvTierConfig tierConfig() {
      Map<String, Object> tiers = new HashMap<>();
      tiers.put("max_local_cpu_size", gigabytes(memoryBytes));
      tiers.put("cache_policy", "tinylfu");
      tiers.put("copy_down_threads", COPY_DOWN_THREADS);
      tiers.put("copy_down_queue", COPY_DOWN_QUEUE);
      if (diskPath != null) {
        tiers.put("disk_write_threads", DISK_WRITE_THREADS);
        tiers.put("disk_read_threads", DISK_READ_THREADS);
        tiers.put("disk_queue", DISK_QUEUE);
        tiers.put("local_disk", diskPath.toString());
        tiers.put("max_local_disk_size", gigabytes(diskBytes));
      }
      return KvTierConfig.of(tiers);
    }

    private static String gigabytes(long bytes) {
      return BigDecimal.valueOf(bytes).divide(BigDecimal.valueOf(1L << 30)).toPlainString();
    }

    /** The settings with the secret masked ({@link Redaction#MASK}) or {@code none}. */
    @Override
    public String toString() {
      return "Settings[bindHost="
          + bindHost
          + ", port="
          + port
          + ", memoryBytes="
          + memoryBytes
          + ", maxValueBytes="
          + maxValueBytes
          + ", diskPath="
          + diskPath
          + ", diskBytes="
          + diskBytes
          + ", secret="
          + (secret == null || secret.length == 0 ? "none" : Redaction.MASK)
          + ", workerThreads="
          + workerThreads
          + ", tlsCertificate="
          + tlsCertificate
          + ", tlsKey="
          + (tlsKey == null ? "none" : tlsKey)
          + ", statsPort="
          + statsPort
          + "]";
    }
  }

  private final Settings settings;
  private final SizeClassPools pool;
  private final TieredStore store;
  private final EventLoopGroup boss;

  /**
   * Every client connection, closed by {@link #close} before the event loops stop: a loop that
   * stops while busy does not always close the channels it still holds, and their clients would
   * stay connected to a server that is gone.
   */
  private final ChannelGroup connections = new DefaultChannelGroup(GlobalEventExecutor.INSTANCE);

  private volatile boolean closing;
  private final EventLoopGroup io;
  private final ExecutorService workers;
  private final LongAdder rejected = new LongAdder();
  private final ServerCounters counters = new ServerCounters();
  private final SslContext tls; // null: plain TCP
  private final Channel channel;
  private final ServerMetrics metrics; // null: no stats port

  /**
   * Starts serving. Blocks until the socket is bound.
   *
   * @throws IllegalStateException if the port cannot be bound
   */
  public CacheServer(Settings settings) throws InterruptedException {
    this(settings, newWorkers(settings.workerThreads(), WORKER_QUEUE));
  }

  /**
   * The worker pool: {@code threads} named daemon threads, at most {@code queue} tasks waiting, a
   * task beyond refused with {@link RejectedExecutionException}.
   */
  static ExecutorService newWorkers(int threads, int queue) {
    return new ThreadPoolExecutor(
        threads,
        threads,
        0,
        TimeUnit.MILLISECONDS,
        new ArrayBlockingQueue<>(queue),
        DaemonThreads.numbered("kvtier-server-worker-"),
        new ThreadPoolExecutor.AbortPolicy());
  }

  /**
   * Like {@link #CacheServer(Settings)} with the pool that serves GETs and EXISTSes (tests pass a
   * small one); it must refuse a task it cannot queue ({@link RejectedExecutionException}), and it
   * is shut down by {@link #close()}.
   */
  @SuppressWarnings(
      "deprecation") // RCVBUF_ALLOCATOR: Netty 4.2 deprecates it with no successor yet
  CacheServer(Settings settings, ExecutorService workers) throws InterruptedException {
    this.settings = settings;
    this.pool =
        new SizeClassPools(
            MmapAllocator.INSTANCE, settings.memoryBytes(), settings.maxValueBytes());
    try {
      this.store = Tiers.open(settings.tierConfig(), pool, 0, true);
    } catch (RuntimeException | Error e) {
      pool.close();
      throw e;
    }
    this.workers = workers;
    try {
      this.tls =
          settings.tlsCertificate() == null
              ? null
              : Tls.server(settings.tlsCertificate(), settings.tlsKey());
    } catch (IllegalArgumentException e) {
      store.close();
      pool.close();
      throw e;
    }
    boolean epoll = Epoll.isAvailable();
    var factory = epoll ? EpollIoHandler.newFactory() : NioIoHandler.newFactory();
    this.boss = new MultiThreadIoEventLoopGroup(1, factory);
    this.io = new MultiThreadIoEventLoopGroup(0, factory);
    ServerBootstrap b =
        new ServerBootstrap()
            .group(boss, io)
            .channel(epoll ? EpollServerSocketChannel.class : NioServerSocketChannel.class)
            .childOption(ChannelOption.TCP_NODELAY, true)
            .childHandler(
                new ChannelInitializer<SocketChannel>() {
                  @Override
                  protected void initChannel(SocketChannel ch) {
                    connections.add(ch);
                    if (closing) { // accepted as the server closed
                      ch.close();
                      return;
                    }
                    ServerHandler h = new ServerHandler();
                    FrameDecoder decoder = new FrameDecoder(h, settings.maxValueBytes());
                    counters.connected(ch);
                    if (tls == null) {
                      ch.config().setRecvByteBufAllocator(new SlotReceiveAllocator(decoder));
                      ch.pipeline().addLast(decoder);
                    } else {
                      // ciphertext cannot be read into a slot: the decoder copies the plaintext
                      ch.pipeline().addLast(tls.newHandler(ch.alloc()), decoder);
                    }
                    ch.pipeline().addLast(new ConnectionErrors());
                  }
                });
    try {
      this.channel = b.bind(settings.bindHost(), settings.port()).sync().channel();
    } catch (RuntimeException e) {
      close();
      throw new IllegalStateException(
          "cannot listen on " + settings.bindHost() + ":" + settings.port() + ": " + e, e);
    }
    try {
      this.metrics =
          settings.statsPort() == Settings.NO_STATS
              ? null
              : new ServerMetrics(settings.statsPort(), this);
    } catch (IOException e) {
      close();
      throw new IllegalStateException(
          "cannot serve stats on 127.0.0.1:" + settings.statsPort() + ": " + e.getMessage(), e);
    }
    LOG.log(
        System.Logger.Level.INFO,
        "kvtier cache server on "
            + channel.localAddress()
            + " ("
            + (epoll ? "epoll" : "nio")
            + (tls == null ? ", no TLS" : ", TLS")
            + "), "
            + settings.memoryBytes() / (1 << 20)
            + " MiB memory for values of up to "
            + settings.maxValueBytes() / (1 << 20)
            + " MiB, each in a slot of its size class"
            + (settings.diskPath() == null ? "" : ", spilling to " + settings.diskPath())
            + (metrics == null
                ? ""
                : ", stats on http://127.0.0.1:" + metrics.port() + "/metrics"));
  }

  /** The port stats are served on, or -1 without a stats port. */
  public int statsPort() {
    return metrics == null ? -1 : metrics.port();
  }

  /** What the server has done since it started (requests, connections), for its stats. */
  ServerCounters counters() {
    return counters;
  }

  /** The server's settings. */
  Settings settings() {
    return settings;
  }

  /** The port the server listens on. */
  public int port() {
    return ((java.net.InetSocketAddress) channel.localAddress()).getPort();
  }

  /** GETs and EXISTSes refused because the worker queue was full (answered as misses). */
  public long rejectedRequests() {
    return rejected.sum();
  }

  /** The store behind the server (for tests). */
  public TieredStore store() {
    return store;
  }

  /** Stops accepting, closes connections and releases every chunk. Idempotent. */
  @Override
  public void close() {
    if (metrics != null) {
      metrics.close();
    }
    closing = true;
    if (channel != null) {
      channel.close().awaitUninterruptibly();
    }
    connections.close().awaitUninterruptibly();
    if (boss != null) {
      boss.shutdownGracefully(0, 1, TimeUnit.SECONDS).awaitUninterruptibly();
      io.shutdownGracefully(0, 1, TimeUnit.SECONDS).awaitUninterruptibly();
    }
    if (workers != null) {
      workers.shutdownNow();
    }
    store.close();
    pool.close();
  }

  /**
   * The end of every connection's pipeline: a connection that fails (a TLS handshake refused, a
   * reset) is closed and counted, and the first failure of each kind is logged in one line, not as
   * a stack trace per client.
   */
  private final class ConnectionErrors extends ChannelInboundHandlerAdapter {
    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
      counters.connectionErrors.increment();
      String kind =
          cause.getCause() == null
              ? cause.getClass().getName()
              : cause.getCause().getClass().getName();
      if (counters.firstOfKind(kind)) {
        LOG.log(
            System.Logger.Level.WARNING,
            "connection from "
                + ctx.channel().remoteAddress()
                + " failed: "
                + describe(cause)
                + " (further failures of this kind are only counted:"
                + " kvtier_server_connection_errors_total)");
      }
      ctx.close();
    }

    /**
     * The failure in words, never with the peer's bytes: Netty's message for a record that is not
     * TLS holds them in hex, and a plain client's first frame carries its shared secret.
     */
    private static String describe(Throwable cause) {
      for (Throwable t = cause; t != null; t = t.getCause()) {
        if (t instanceof NotSslRecordException) {
          return "not a TLS record (a client without TLS? it must use kvtiers://)";
        }
      }
      return Tls.rootMessage(cause);
    }
  }

  /** One connection: handshake, then GET / PUT / EXISTS. Confined to its event loop. */
  private final class ServerHandler implements FrameDecoder.Listener {
    private boolean authenticated;
    private ChunkKey putKey;
    private byte putStatus;

    @Override
    public void onFrame(ChannelHandlerContext ctx, byte op, int requestId, ByteBuf payload) {
      if (op == Protocol.HELLO) {
        hello(ctx, requestId, payload);
        return;
      }
      if (!authenticated) {
        error(ctx, requestId, Protocol.ERR_BAD_HELLO, "HELLO first");
        return;
      }
      switch (op) {
        case Protocol.GET -> {
          counters.gets.increment();
          ChunkKey[] keys = keys(ctx, requestId, payload);
          if (keys != null && !submit(() -> get(ctx, requestId, keys))) {
            for (int i = 0; i < keys.length; i++) {
              miss(ctx, requestId, i);
            }
            ctx.flush();
          }
        }
        case Protocol.EXISTS -> {
          counters.exists.increment();
          ChunkKey[] keys = keys(ctx, requestId, payload);
          if (keys != null && !submit(() -> existsN(ctx, requestId, store.prefixLength(keys)))) {
            existsN(ctx, requestId, 0);
          }
        }
        case Protocol.DELETE -> {
          if (payload.readableBytes() != Protocol.KEY_BYTES) {
            error(ctx, requestId, Protocol.ERR_PROTOCOL, "bad DELETE");
            return;
          }
          boolean removed = store.remove(Protocol.key(payload));
          ByteBuf out = ctx.alloc().buffer(Protocol.HEADER_BYTES + 1);
          Protocol.header(out, Protocol.DELETED, requestId, 1);
          out.writeByte(removed ? 1 : 0);
          ctx.writeAndFlush(out);
        }
        default -> error(ctx, requestId, Protocol.ERR_PROTOCOL, "unexpected op " + op);
      }
    }

    /**
     * Hands {@code task} to a worker; false (counted) if the queue is full or the server closing.
     */
    private boolean submit(Runnable task) {
      try {
        workers.execute(task);
        return true;
      } catch (RejectedExecutionException e) {
        rejected.increment();
        return false;
      }
    }

    private void existsN(ChannelHandlerContext ctx, int requestId, int n) {
      ByteBuf out = ctx.alloc().buffer(Protocol.HEADER_BYTES + 2);
      Protocol.header(out, Protocol.EXISTS_N, requestId, 2);
      out.writeShortLE(n);
      ctx.writeAndFlush(out);
    }

    private void miss(ChannelHandlerContext ctx, int requestId, int index) {
      ByteBuf out = ctx.alloc().buffer(Protocol.HEADER_BYTES + 2);
      Protocol.header(out, Protocol.MISS, requestId, 2);
      out.writeShortLE(index);
      ctx.write(out);
    }

    private ChunkKey[] keys(ChannelHandlerContext ctx, int requestId, ByteBuf payload) {
      int count = payload.readUnsignedShortLE();
      if (count > Protocol.MAX_BATCH || payload.readableBytes() != count * Protocol.KEY_BYTES) {
        error(ctx, requestId, Protocol.ERR_PROTOCOL, "bad key list of " + count);
        return null;
      }
      ChunkKey[] keys = new ChunkKey[count];
      for (int i = 0; i < count; i++) {
        keys[i] = Protocol.key(payload);
      }
      return keys;
    }

    private void hello(ChannelHandlerContext ctx, int requestId, ByteBuf payload) {
      if (payload.readableBytes() < 8 || payload.readIntLE() != Protocol.MAGIC) {
        error(ctx, requestId, Protocol.ERR_BAD_HELLO, "not a kvtier client");
        return;
      }
      int version = payload.readUnsignedShortLE();
      if (version != Protocol.VERSION) {
        error(
            ctx,
            requestId,
            Protocol.ERR_BAD_HELLO,
            "protocol version "
                + version
                + " not supported; this server speaks "
                + Protocol.VERSION);
        return;
      }
      int n = payload.readUnsignedShortLE();
      byte[] secret = new byte[Math.min(n, payload.readableBytes())];
      payload.readBytes(secret);
      byte[] expected = settings.secret() == null ? new byte[0] : settings.secret();
      if (!MessageDigest.isEqual(secret, expected)) {
        counters.authFailures.increment();
        error(ctx, requestId, Protocol.ERR_AUTH, "wrong shared secret");
        return;
      }
      authenticated = true;
      ByteBuf out = ctx.alloc().buffer(Protocol.HEADER_BYTES + 2);
      Protocol.header(out, Protocol.HELLO_OK, requestId, 2);
      out.writeShortLE(Protocol.VERSION);
      ctx.writeAndFlush(out);
    }

    private void get(ChannelHandlerContext ctx, int requestId, ChunkKey[] keys) {
      for (int i = 0; i < keys.length; i++) {
        ChunkBuffer b;
        try {
          b = store.get(keys[i]);
        } catch (java.io.IOException e) {
          b = null;
        }
        if (b == null) {
          counters.getMisses.increment();
          miss(ctx, requestId, i);
          continue;
        }
        counters.getHits.increment();
        counters.bytesSent.add(b.length());
        ByteBuf head = ctx.alloc().buffer(Protocol.HEADER_BYTES + 2);
        Protocol.header(head, Protocol.VALUE, requestId, 2 + b.length());
        head.writeShortLE(i);
        ChunkBuffer held = b;
        // One write of header and body (workers write concurrently: frames must not interleave);
        // the body is the pinned slot itself, released once the socket has taken it.
        ctx.write(Unpooled.wrappedBuffer(head, Unpooled.wrappedBuffer(b.segment().asByteBuffer())))
            .addListener(f -> held.release());
      }
      ctx.flush();
    }

    @Override
    public ChunkBuffer onBulkStart(
        ChannelHandlerContext ctx, byte op, int requestId, ByteBuf prefix, long valueBytes)
        throws FrameDecoder.ProtocolException {
      if (!authenticated || op != Protocol.PUT) {
        throw new FrameDecoder.ProtocolException(Protocol.ERR_PROTOCOL, "unexpected value");
      }
      putKey = Protocol.key(prefix);
      if (store.contains(putKey)) {
        putStatus = Protocol.DUPLICATE;
        return null;
      }
      ChunkBuffer b = store.cpu().allocate(valueBytes);
      putStatus = b == null ? Protocol.DROPPED : Protocol.STORED;
      return b;
    }

    @Override
    public void onBulkEnd(ChannelHandlerContext ctx, byte op, int requestId, ChunkBuffer target) {
      byte status = putStatus;
      if (target != null) {
        if (!store.put(putKey, target)) {
          status = Protocol.DUPLICATE;
        } else {
          counters.bytesReceived.add(target.length());
        }
        target.release();
      }
      counters.put(status);
      ByteBuf out = ctx.alloc().buffer(Protocol.HEADER_BYTES + 1);
      Protocol.header(out, Protocol.PUT_DONE, requestId, 1);
      out.writeByte(status);
      ctx.writeAndFlush(out);
    }

    @Override
    public void onProtocolError(FrameDecoder.ProtocolException e) {
      counters.protocolErrors.increment(); // a frame the decoder refused: garbage, too large
    }

    private void error(ChannelHandlerContext ctx, int requestId, short code, String message) {
      if (code == Protocol.ERR_PROTOCOL
          || code == Protocol.ERR_TOO_LARGE
          || code == Protocol.ERR_BAD_HELLO) {
        counters.protocolErrors.increment();
      }
      byte[] msg = message.getBytes(StandardCharsets.UTF_8);
      ByteBuf out = ctx.alloc().buffer();
      Protocol.header(out, Protocol.ERROR, requestId, 4 + msg.length);
      out.writeShortLE(code);
      out.writeShortLE(msg.length);
      out.writeBytes(msg);
      ctx.writeAndFlush(out).addListener(f -> ctx.close());
    }
  }

  /**
   * Runs a server until the process is stopped.
   *
   * <pre>
   *   --port N          TCP port (default 7070)
   *   --bind HOST       address to listen on (default 127.0.0.1)
   *   --memory-gb G     pinned memory for chunks, GB = 2^30 bytes (default 4)
   *   --max-value-mb M  largest chunk accepted, MiB (default 64)
   *   --disk PATH       spill evicted chunks to this directory (default: none)
   *   --disk-gb G       disk budget when --disk is given (default 64)
   *   --secret-file F   clients must present this file's contents (trimmed)
   *   --workers N       threads serving GETs (default 4)
   *   --tls-cert F      serve TLS with this PEM certificate chain (with --tls-key)
   *   --tls-key F       the certificate's private key, PEM, unencrypted PKCS#8
   *   --stats-port N    Prometheus text on http://127.0.0.1:N/metrics (default: none)
   * </pre>
   */
  public static void main(String[] args) throws Exception {
    Settings settings;
    try {
      settings = parse(args);
    } catch (Help h) {
      System.out.println(USAGE);
      return;
    } catch (IllegalArgumentException | IOException e) {
      System.err.println("kvtier-server: " + e.getMessage() + "\n" + USAGE);
      System.exit(2);
      return;
    }
    CacheServer server;
    try {
      server = new CacheServer(settings);
    } catch (RuntimeException e) {
      // e.g. the port is taken, or the certificate does not go with the key or the disk path is not
      // a directory: one line, not a stack trace
      System.err.println("kvtier-server: cannot start: " + e.getMessage());
      System.exit(3);
      return;
    }
    // SIGTERM and SIGINT: stop accepting, close the connections (a request in flight is answered
    // or its connection closed), release the memory, exit 0. A JVM started with -Xrs cannot take
    // them; the shutdown hook then still covers System.exit.
    java.util.concurrent.CountDownLatch stop = new java.util.concurrent.CountDownLatch(1);
    String[] stoppedBy = {"shutdown"};
    for (String name : new String[] {"TERM", "INT"}) {
      onSignal(
          name,
          () -> {
            stoppedBy[0] = "SIG" + name;
            stop.countDown();
          });
    }
    Runtime.getRuntime().addShutdownHook(new Thread(server::close, "kvtier-server-shutdown"));
    // Said once the handlers are in: a signal from now on stops the server cleanly.
    System.out.printf(
        Locale.ROOT,
        "kvtier cache server listening on %s:%d%n",
        settings.bindHost(),
        server.port());
    stop.await();
    server.close();
    System.out.println("kvtier cache server stopped (" + stoppedBy[0] + ")");
    System.exit(0);
  }

  /**
   * Runs {@code action} when the process gets signal {@code name} (jdk.unsupported's {@code
   * sun.misc.Signal}, through reflection: the API is there on every JDK kvtier runs on but its
   * direct use is a compiler warning). Logged and skipped where the JVM keeps the signal (-Xrs).
   */
  private static void onSignal(String name, Runnable action) {
    try {
      Class<?> signal = Class.forName("sun.misc.Signal");
      Class<?> handler = Class.forName("sun.misc.SignalHandler");
      Object h =
          java.lang.reflect.Proxy.newProxyInstance(
              handler.getClassLoader(),
              new Class<?>[] {handler},
              (proxy, method, args) -> {
                if (method.getName().equals("handle")) {
                  action.run();
                }
                return null;
              });
      signal
          .getMethod("handle", signal, handler)
          .invoke(null, signal.getConstructor(String.class).newInstance(name), h);
    } catch (ReflectiveOperationException | RuntimeException e) {
      Throwable cause = e.getCause() != null ? e.getCause() : e;
      LOG.log(System.Logger.Level.DEBUG, "SIG" + name + " not handled: " + cause);
    }
  }

  static final String USAGE =
      "usage: kvtier-server [--port N] [--bind HOST] [--memory-gb G] [--max-value-mb M]"
          + " [--disk PATH --disk-gb G] [--secret-file F] [--workers N]"
          + " [--tls-cert F --tls-key F] [--stats-port N]";

  /** {@code --help} was asked for. */
  static final class Help extends Exception {
    private static final long serialVersionUID = 1L;

    Help() {
      super(null, null, false, false);
    }
  }

  /**
   * The settings {@code args} give (see {@link #main}).
   *
   * @throws Help if {@code --help} or {@code -h} is among them
   * @throws IllegalArgumentException naming the flag and what it takes, for an unknown flag, a
   *     missing value or a value out of range
   * @throws IOException if the secret file cannot be read
   */
  static Settings parse(String... args) throws Help, IOException {
    String bind = "127.0.0.1";
    int port = 7070;
    double memoryGb = 4;
    long maxValueMb = 64;
    Path disk = null;
    double diskGb = 64;
    byte[] secret = null;
    int workers = 4;
    Path tlsCert = null;
    Path tlsKey = null;
    int statsPort = Settings.NO_STATS;
    for (int i = 0; i < args.length; i++) {
      String flag = args[i];
      if (flag.equals("--help") || flag.equals("-h")) {
        throw new Help();
      }
      if (i + 1 >= args.length) {
        throw new IllegalArgumentException(flag + " needs a value");
      }
      String v = args[++i];
      switch (flag) {
        case "--port" -> port = (int) integer(flag, v, 0, 65535);
        case "--bind" -> bind = v;
        case "--memory-gb" -> memoryGb = positive(flag, v);
        case "--max-value-mb" -> maxValueMb = integer(flag, v, 1, 1 << 20);
        case "--disk" -> disk = Path.of(v);
        case "--disk-gb" -> diskGb = positive(flag, v);
        case "--secret-file" -> {
          try {
            secret = Files.readString(Path.of(v)).trim().getBytes(StandardCharsets.UTF_8);
          } catch (NoSuchFileException e) {
            throw new IllegalArgumentException("--secret-file " + v + ": no such file");
          }
          if (secret.length == 0) {
            throw new IllegalArgumentException("--secret-file " + v + " is empty");
          }
        }
        case "--workers" -> workers = (int) integer(flag, v, 1, 1024);
        case "--tls-cert" -> tlsCert = file(flag, v);
        case "--tls-key" -> tlsKey = file(flag, v);
        case "--stats-port" -> statsPort = (int) integer(flag, v, 0, 65535);
        default -> throw new IllegalArgumentException("unknown flag " + flag);
      }
    }
    return new Settings(
        bind,
        port,
        (long) (memoryGb * (1L << 30)),
        maxValueMb << 20,
        disk,
        (long) (diskGb * (1L << 30)),
        secret,
        workers,
        tlsCert,
        tlsKey,
        statsPort);
  }

  private static Path file(String flag, String v) {
    Path p = Path.of(v);
    if (!Files.isRegularFile(p)) {
      throw new IllegalArgumentException(flag + " " + v + ": no such file");
    }
    if (!Files.isReadable(p)) {
      throw new IllegalArgumentException(flag + " " + v + ": not readable");
    }
    return p;
  }

  private static long integer(String flag, String v, long min, long max) {
    long n;
    try {
      n = Long.parseLong(v.trim());
    } catch (NumberFormatException e) {
      n = Long.MIN_VALUE;
    }
    if (n < min || n > max) {
      throw new IllegalArgumentException(
          flag + " takes a whole number from " + min + " to " + max + ", got '" + v + "'");
    }
    return n;
  }

  private static double positive(String flag, String v) {
    double g;
    try {
      g = Double.parseDouble(v.trim());
    } catch (NumberFormatException e) {
      g = Double.NaN;
    }
    if (!(g > 0) || Double.isInfinite(g)) {
      throw new IllegalArgumentException(flag + " takes a positive number of GB, got '" + v + "'");
    }
    return g;
  }
}
