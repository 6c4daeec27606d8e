package io.kvtier.remote.redis;

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
import io.kvtier.store.StoreStats;
import io.kvtier.wire.RejectedRequestException;
import io.lettuce.core.ClientOptions;
import io.lettuce.core.RedisClient;
import io.lettuce.core.RedisFuture;
import io.lettuce.core.RedisURI;
import io.lettuce.core.SetArgs;
import io.lettuce.core.SocketOptions;
import io.lettuce.core.TimeoutOptions;
import io.lettuce.core.api.StatefulConnection;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.api.async.RedisKeyAsyncCommands;
import io.lettuce.core.api.async.RedisStringAsyncCommands;
import io.lettuce.core.cluster.ClusterClientOptions;
import io.lettuce.core.cluster.RedisClusterClient;
import io.lettuce.core.cluster.api.StatefulRedisClusterConnection;
import io.lettuce.core.resource.ClientResources;
import io.lettuce.core.resource.DefaultClientResources;
import io.lettuce.core.sentinel.api.StatefulRedisSentinelConnection;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongFunction;

/**
 * The remote tier on Redis or Valkey through Lettuce (Netty): standalone, TLS, sentinel and
 * cluster.
 *
 * <p>URLs: {@code redis://[[user:]password@]host[:port][/db]}, {@code rediss://...} (TLS), {@code
 * redis-sentinel://[password@]host:port[,host:port...][/db]#master}, and {@code
 * redis-cluster://[password@]host:port[,host:port...]} ({@code rediss-cluster://} for TLS).
 *
 * <p>Implementation note.
 *
 * <ul>
 *   <li>Values are written through {@link ChunkCodec}, encoded as views of pinned buffers. On a
 *       plain {@code redis://} server, GETs go through {@link RespGetClient}, which reads the
 *       socket straight into a pinned buffer from the injected allocator (on {@code
 *       redis-sentinel://}, to the master a sentinel names at each connection), and on a plain
 *       {@code redis-cluster://} through {@link ClusterGets} (one such client per node, slots from
 *       Lettuce's map); over TLS Lettuce decodes them and the codec copies them into one.
 *   <li>{@link #put} never blocks: it retains the chunk, sends {@code SET} asynchronously and
 *       releases on completion; more than {@code remote_queue} puts in flight drop the put
 *       (counted). Gets, exists and batched forms are pipelined (every command is sent before any
 *       reply is awaited) and wait at most {@code remote_timeout_ms}; a reply that arrives after
 *       the caller gave up is released when it lands.
 *   <li>A server that is down, slow or answering garbage turns into misses and dropped puts,
 *       counted by kind in an {@link ErrorTally} (first of each kind logged). A standalone or
 *       sentinel connection rejects commands while disconnected; a cluster connection queues at
 *       most {@link #CLUSTER_REQUEST_QUEUE} commands while a node reconnects, each bounded by the
 *       timeout. Lettuce reconnects in the background. If the server is absent at start, a daemon
 *       retries the connection every {@link #RECONNECT_SECONDS}.
 *   <li>Remote chunks cannot be pinned: {@link #pin} reports presence only, and the server's own
 *       eviction ({@code maxmemory}) or {@code remote_ttl_sec} may still drop them.
 * </ul>
 *
 * <p>Thread-safe.
 */
public final class RedisStore implements KvStore {
  /** Seconds between connection attempts while the server is unreachable at start. */
  public static final long RECONNECT_SECONDS = 5;

  /** GET and EXISTS commands sent and not yet answered; beyond this a read is a miss. */
  static final int MAX_IN_FLIGHT_READS = 4096;

  /** Commands a cluster connection may queue while a node reconnects (bounds memory). */
  static final int CLUSTER_REQUEST_QUEUE = 4096;

  private static final System.Logger LOG = System.getLogger(RedisStore.class.getName());

  private final String url;
  private final long timeoutMillis;
  private final int ttlSeconds;
  private final int queueBound;
  private final boolean hashTags; // cluster keys tagged by the prompt's root
  private final ChunkCodec codec;
  private final ClientResources resources;
  private final ErrorTally errors;
  private final InFlight inFlightPuts = new InFlight();
  private final AtomicInteger inFlightReads = new AtomicInteger();
  private final ScheduledExecutorService reconnector;
  private final Object connectLock = new Object();

  private RespGetClient getClient; // plain redis://: GETs read straight into pinned buffers
  private ClusterGets clusterGets; // plain redis-cluster://: the same, one client per node
  private final java.util.concurrent.atomic.AtomicBoolean reloadingSlots =
      new java.util.concurrent.atomic.AtomicBoolean();
  private final RedisClient client; // standalone and sentinel; null for cluster
  private final RedisClusterClient clusterClient; // cluster; null otherwise
  private volatile StatefulConnection<byte[], ChunkBuffer> connection; // null until connected
  private volatile RedisStringAsyncCommands<byte[], ChunkBuffer> strings;
  private volatile RedisKeyAsyncCommands<byte[], ChunkBuffer> keys;

  private final LongAdder hits = new LongAdder();
  private final LongAdder misses = new LongAdder();
  private final LongAdder puts = new LongAdder();
  private final LongAdder droppedPuts = new LongAdder();
  private final LongAdder duplicatePuts = new LongAdder();
  private volatile boolean closed;

  /** As {@link #RedisStore(String, long, int, int, boolean, LongFunction)}, with hash tags. */
  public RedisStore(
      String url,
      long timeoutMillis,
      int ttlSeconds,
      int queueBound,
      LongFunction<ChunkBuffer> buffers) {
    this(url, timeoutMillis, ttlSeconds, queueBound, true, buffers);
  }

  /**
   * Connects to {@code url}; if the server does not answer, starts anyway (every operation is a
   * miss or a dropped put) and keeps trying in the background.
   *
   * @param hashTags on a cluster, key chunks with their prompt's root as hash tag ({@link
   *     #redisKey(ChunkKey, boolean)}), so a prompt's chunks live on one node; ignored elsewhere
   * @param buffers where values read from the server go (null when none is free: a miss)
   * @throws ConfigException if the URL is malformed or of an unknown scheme
   */
  public RedisStore(
      String url,
      long timeoutMillis,
      int ttlSeconds,
      int queueBound,
      boolean hashTags,
      LongFunction<ChunkBuffer> buffers) {
    this.url = url;
    this.errors = new ErrorTally(LOG, "remote tier", url);
    this.timeoutMillis = checkPositive(timeoutMillis, "timeoutMillis");
    this.ttlSeconds = ttlSeconds;
    this.queueBound = checkPositive(queueBound, "queueBound");
    this.hashTags = hashTags;
    this.codec = new ChunkCodec(buffers);
    this.resources =
        DefaultClientResources.builder()
            .ioThreadPoolSize(2)
            .threadFactoryProvider(
                pool -> {
                  var netty = new io.netty.util.concurrent.DefaultThreadFactory(pool, true);
                  return r -> netty.newThread(io.kvtier.CpuAffinity.wrap(r));
                })
            .build();
    Duration timeout = Duration.ofMillis(timeoutMillis);
    SocketOptions socket = SocketOptions.builder().connectTimeout(timeout).keepAlive(true).build();
    // No Lettuce command timeouts: a command it times out still decodes its late reply into a
    // pinned buffer that nobody would release. kvtier times out its own waits and releases late
    // replies when they land; outstanding commands are bounded instead (MAX_IN_FLIGHT_READS,
    // remote_queue), so a server that stops answering cannot grow memory.
    TimeoutOptions timeouts = TimeoutOptions.builder().timeoutCommands(false).build();
    String lower = url.toLowerCase(Locale.ROOT);
    try {
      if (lower.startsWith("redis-cluster://") || lower.startsWith("rediss-cluster://")) {
        this.client = null;
        this.clusterClient = RedisClusterClient.create(resources, clusterUris(url));
        // Lettuce's cluster writer rejects commands outright under REJECT_COMMANDS; instead
        // commands wait in a bounded queue while a node reconnects and time out like any other.
        clusterClient.setOptions(
            ClusterClientOptions.builder()
                .socketOptions(socket)
                .timeoutOptions(timeouts)
                .disconnectedBehavior(ClientOptions.DisconnectedBehavior.ACCEPT_COMMANDS)
                .requestQueueSize(CLUSTER_REQUEST_QUEUE)
                .autoReconnect(true)
                .build());
        if (lower.startsWith("redis-cluster://")) {
          clusterGets =
              new ClusterGets(
                  clusterClient::getPartitions,
                  this::reloadSlots,
                  handshake(clusterUris(url).get(0)),
                  timeoutMillis,
                  codec::allocate);
        }
      } else if (lower.startsWith("redis://")
          || lower.startsWith("rediss://")
          || lower.startsWith("redis-sentinel://")
          || lower.startsWith("rediss-sentinel://")) {
        this.clusterClient = null;
        RedisURI uri = RedisURI.create(url);
        this.client = RedisClient.create(resources, uri);
        client.setOptions(
            ClientOptions.builder()
                .socketOptions(socket)
                .timeoutOptions(timeouts)
                .disconnectedBehavior(ClientOptions.DisconnectedBehavior.REJECT_COMMANDS)
                .autoReconnect(true)
                .build());
        if (lower.startsWith("redis://")) {
          getClient =
              new RespGetClient(
                  uri.getHost(), uri.getPort(), handshake(uri), timeoutMillis, codec::allocate);
        } else if (lower.startsWith("redis-sentinel://")) {
          getClient =
              new RespGetClient(
                  () -> sentinelMaster(uri), handshake(uri), timeoutMillis, codec::allocate, null);
        }
      } else {
        throw new ConfigException(
            "remote_url="
                + Redaction.url(url)
                + " has an unknown scheme; allowed: redis://, rediss://, redis-sentinel://,"
                + " redis-cluster://, rediss-cluster://, kvtier://, kvtiers://");
      }
    } catch (IllegalArgumentException e) {
      resources.shutdown();
      if (e instanceof ConfigException ce) {
        throw ce;
      }
      // java.net.URI and Lettuce quote the whole URL, password included, in their messages.
      throw new ConfigException(
          "remote_url="
              + Redaction.url(url)
              + " is malformed: "
              + Redaction.text(e.getMessage(), url));
    }
    this.reconnector =
        Executors.newSingleThreadScheduledExecutor(DaemonThreads.named("kvtier-remote-connect"));
    if (!tryConnect()) {
      reconnector.scheduleWithFixedDelay(
          () -> {
            if (connection == null && !closed) {
              tryConnect();
            }
          },
          RECONNECT_SECONDS,
          RECONNECT_SECONDS,
          TimeUnit.SECONDS);
    }
  }

  /** The master's address as a sentinel reports it now (for each new GET connection). */
  private InetSocketAddress sentinelMaster(RedisURI uri) {
    try (StatefulRedisSentinelConnection<String, String> s = client.connectSentinel()) {
      SocketAddress a =
          s.async()
              .getMasterAddrByName(uri.getSentinelMasterId())
              .get(timeoutMillis, TimeUnit.MILLISECONDS);
      if (!(a instanceof InetSocketAddress master)) {
        throw new IllegalStateException(
            "no sentinel knows master '" + uri.getSentinelMasterId() + "'");
      }
      return master;
    } catch (ExecutionException | TimeoutException e) {
      throw new IllegalStateException("no answer from a sentinel: " + e, e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("interrupted while asking a sentinel", e);
    }
  }

  /** Reloads the cluster's slot map in the background, unless a reload is under way. */
  private void reloadSlots() {
    if (closed || !reloadingSlots.compareAndSet(false, true)) {
      return;
    }
    try {
      reconnector.execute(
          () -> {
            try {
              clusterClient.refreshPartitions();
            } catch (RuntimeException e) {
              errors.record(ErrorKind.UNAVAILABLE, "cannot reload the cluster's slot map", e);
            } finally {
              reloadingSlots.set(false);
            }
          });
    } catch (java.util.concurrent.RejectedExecutionException e) {
      reloadingSlots.set(false); // closing
    }
  }

  /** {@code AUTH} and {@code SELECT} as the URL asks, for {@link RespGetClient}'s connections. */
  private static List<byte[][]> handshake(RedisURI uri) {
    List<byte[][]> cmds = new ArrayList<>();
    io.lettuce.core.RedisCredentials credentials =
        uri.getCredentialsProvider().resolveCredentials().block(Duration.ofSeconds(10));
    if (credentials != null && credentials.hasPassword()) {
      byte[] pw = new String(credentials.getPassword()).getBytes(StandardCharsets.UTF_8);
      byte[] auth = "AUTH".getBytes(StandardCharsets.US_ASCII);
      cmds.add(
          credentials.hasUsername()
              ? new byte[][] {auth, credentials.getUsername().getBytes(StandardCharsets.UTF_8), pw}
              : new byte[][] {auth, pw});
    }
    if (uri.getDatabase() != 0) {
      cmds.add(
          new byte[][] {
            "SELECT".getBytes(StandardCharsets.US_ASCII),
            Integer.toString(uri.getDatabase()).getBytes(StandardCharsets.US_ASCII)
          });
    }
    return cmds;
  }

  static List<RedisURI> clusterUris(String url) {
    boolean tls = url.toLowerCase(Locale.ROOT).startsWith("rediss-cluster://");
    String rest = url.substring(url.indexOf("://") + 3);
    String auth = "";
    int at = rest.lastIndexOf('@');
    if (at >= 0) {
      auth = rest.substring(0, at + 1);
      rest = rest.substring(at + 1);
    }
    int slash = rest.indexOf('/');
    if (slash >= 0) {
      rest = rest.substring(0, slash);
    }
    List<RedisURI> uris = new ArrayList<>();
    for (String hostPort : rest.split(",")) {
      if (hostPort.isBlank()) {
        throw new IllegalArgumentException("empty host");
      }
      uris.add(RedisURI.create((tls ? "rediss://" : "redis://") + auth + hostPort.trim()));
    }
    return uris;
  }

  /** One connection attempt; true if connected. Never throws. */
  private boolean tryConnect() {
    synchronized (connectLock) {
      if (connection != null || closed) {
        return connection != null;
      }
      try {
        if (clusterClient != null) {
          StatefulRedisClusterConnection<byte[], ChunkBuffer> c = clusterClient.connect(codec);
          // Open every master's connection now: node connections are otherwise opened on first
          // use, and commands sent before one is up would be rejected.
          for (var node : c.getPartitions()) {
            c.getConnection(node.getNodeId());
          }
          strings = c.async();
          keys = c.async();
          connection = c;
        } else {
          StatefulRedisConnection<byte[], ChunkBuffer> c = client.connect(codec);
          strings = c.async();
          keys = c.async();
          connection = c;
        }
        LOG.log(System.Logger.Level.INFO, "remote tier connected to " + redacted());
        return true;
      } catch (RuntimeException e) {
        errors.record(
            ErrorKind.UNAVAILABLE,
            "cannot connect to " + redacted() + "; retrying every " + RECONNECT_SECONDS + " s",
            e);
        return false;
      }
    }
  }

  private String redacted() {
    return Redaction.url(url);
  }

  /** The Redis key of a chunk; see {@link #redisKey(ChunkKey, boolean)}. */
  private byte[] redisKey(ChunkKey key) {
    return redisKey(key, hashTags && clusterClient != null);
  }

  /**
   * The Redis key of a chunk: {@code kvtier:<namespace>:<hash>}, or with {@code hashTags} (cluster
   * mode) {@code kvtier:{<namespace>:<root>}:<hash>}, so every chunk of a prompt — and of every
   * prompt that starts with the same chunk — hashes to one slot, and a prompt's pipelined gets and
   * existence checks go to one node. A key without a root ({@link ChunkKey#root} 0) is tagged by
   * its own hash.
   */
  static byte[] redisKey(ChunkKey key, boolean hashTags) {
    String ns = HexFormat.of().toHexDigits(key.namespace());
    String s;
    if (!hashTags) {
      s = "kvtier:" + ns + ":" + key.hashHex();
    } else {
      long root = key.root() != 0 ? key.root() : key.h1();
      s = "kvtier:{" + ns + ":" + HexFormat.of().toHexDigits(root) + "}:" + key.hashHex();
    }
    return s.getBytes(StandardCharsets.US_ASCII);
  }

  /** Whether commands can be sent now. */
  public boolean connected() {
    StatefulConnection<byte[], ChunkBuffer> c = connection;
    return c != null && c.isOpen();
  }

  /** Reserves room for {@code n} reads; false (a miss, counted) if too many are outstanding. */
  private boolean reserveReads(int n) {
    if (inFlightReads.addAndGet(n) > MAX_IN_FLIGHT_READS) {
      inFlightReads.addAndGet(-n);
      errors.record(
          ErrorKind.BACKLOG,
          MAX_IN_FLIGHT_READS + " reads outstanding: the server is not answering",
          null);
      return false;
    }
    return true;
  }

  private <T> T awaitUntil(RedisFuture<T> f, long deadlineNanos, String what) {
    try {
      return f.get(Math.max(0, deadlineNanos - System.nanoTime()), TimeUnit.NANOSECONDS);
    } catch (TimeoutException e) {
      errors.record(ErrorKind.TIMEOUT, what + " took longer than " + timeoutMillis + " ms", e);
    } catch (ExecutionException e) {
      errors.record(kindOf(e.getCause()), what + " failed", e.getCause());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    return null;
  }

  private <T> T await(RedisFuture<T> f, String what) {
    return awaitUntil(f, System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis), what);
  }

  private static ErrorKind kindOf(Throwable e) {
    String name = e == null ? "" : e.getClass().getSimpleName();
    if (e != null && ClusterGets.redirected(e)) {
      return ErrorKind.MOVED;
    }
    if (e instanceof RejectedRequestException r
        && r.reason() == RejectedRequestException.Reason.BACKLOG) {
      return ErrorKind.BACKLOG;
    }
    if (name.contains("Timeout")) {
      return ErrorKind.TIMEOUT;
    }
    if (name.contains("Connection") || String.valueOf(e.getMessage()).contains("not connected")) {
      return ErrorKind.UNAVAILABLE;
    }
    return ErrorKind.REMOTE_FAILED;
  }

  @Override
  public boolean contains(ChunkKey key) {
    return prefixLength(new ChunkKey[] {key}) == 1;
  }

  @Override
  public Medium medium() {
    return Medium.REMOTE;
  }

  /** Pipelined {@code EXISTS} of every key; waits at most {@code remote_timeout_ms}. */
  @Override
  public int prefixLength(ChunkKey[] chunkKeys) {
    List<RedisFuture<Long>> replies = sendExists(chunkKeys);
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
    int n = 0;
    for (RedisFuture<Long> f : replies) {
      Long found = awaitUntil(f, deadline, "EXISTS");
      if (found == null || found == 0) {
        break;
      }
      n++;
    }
    return n;
  }

  /**
   * Sends a pipelined {@code EXISTS} of every key and returns at once; the future completes with
   * the number of leading keys present once every reply is in, 0 when one failed (counted). A
   * stalled server leaves it pending: the caller bounds its own wait, and the replies are still
   * counted against the outstanding reads until they arrive or the connection drops. Never
   * completes exceptionally.
   */
  @Override
  public CompletableFuture<Integer> prefixLengthAsync(ChunkKey[] chunkKeys) {
    List<RedisFuture<Long>> replies = sendExists(chunkKeys);
    if (replies.isEmpty()) {
      return CompletableFuture.completedFuture(0);
    }
    CompletableFuture<?>[] all = new CompletableFuture<?>[replies.size()];
    for (int i = 0; i < all.length; i++) {
      all[i] = replies.get(i).toCompletableFuture();
    }
    return CompletableFuture.allOf(all)
        .handle(
            (v, err) -> {
              if (err != null) {
                Throwable cause = err instanceof CompletionException ? err.getCause() : err;
                errors.record(kindOf(cause), "EXISTS failed", cause);
                return 0;
              }
              int n = 0;
              while (n < all.length && ((Long) all[n].join()) != 0) {
                n++;
              }
              return n;
            });
  }

  /** Sends {@code EXISTS} for every key; empty when none could be sent (not connected, counted). */
  private List<RedisFuture<Long>> sendExists(ChunkKey[] chunkKeys) {
    checkOpen();
    if (!connected() || chunkKeys.length == 0 || !reserveReads(chunkKeys.length)) {
      return List.of();
    }
    List<RedisFuture<Long>> replies = new ArrayList<>(chunkKeys.length);
    try {
      for (ChunkKey k : chunkKeys) {
        RedisFuture<Long> f = keys.exists(redisKey(k));
        f.whenComplete((v, err) -> inFlightReads.decrementAndGet());
        replies.add(f);
      }
    } catch (RuntimeException e) { // rejected while disconnected
      inFlightReads.addAndGet(replies.size() - chunkKeys.length);
      errors.record(ErrorKind.UNAVAILABLE, "exists on " + redacted() + " rejected", e);
      return List.of();
    }
    return replies;
  }

  /**
   * Sends {@code SET NX} without waiting. A remote store cannot tell whether the key exists without
   * a round trip, so this returns true for every write it sends; the server ignores the write
   * (counted as a duplicate) when the key exists.
   */
  @Override
  public boolean put(ChunkKey key, ChunkBuffer chunk) {
    checkOpen();
    if (!connected()) {
      droppedPuts.increment();
      errors.record(ErrorKind.UNAVAILABLE, "put to " + redacted() + " while disconnected", null);
      return false;
    }
    if (inFlightPuts.increment() > queueBound) {
      inFlightPuts.decrement();
      droppedPuts.increment();
      return false;
    }
    chunk.retain();
    RedisFuture<String> f;
    try {
      // NX: an existing chunk is never overwritten (equal keys hold equal bytes anyway).
      f =
          strings.set(
              redisKey(key),
              chunk,
              ttlSeconds > 0 ? SetArgs.Builder.nx().ex(ttlSeconds) : SetArgs.Builder.nx());
    } catch (RuntimeException e) {
      chunk.release();
      droppedPuts.increment();
      errors.record(ErrorKind.UNAVAILABLE, "put to " + redacted() + " rejected", e);
      inFlightPuts.decrement();
      return false;
    }
    f.whenComplete(
        (ok, err) -> {
          chunk.release();
          if (err == null) {
            (ok == null ? duplicatePuts : puts).increment(); // NX answers nil if it existed
          } else {
            droppedPuts.increment();
            errors.record(kindOf(err), "SET failed", err);
          }
          inFlightPuts.decrement(); // last: awaitIdle sees the outcome counted
        });
    return true;
  }

  @Override
  public ChunkBuffer get(ChunkKey key) {
    return getBatch(new ChunkKey[] {key})[0];
  }

  /** Pipelined {@code GET}s; replies arriving after {@code remote_timeout_ms} are released. */
  @Override
  public ChunkBuffer[] getBatch(ChunkKey[] chunkKeys) {
    checkOpen();
    ChunkBuffer[] out = new ChunkBuffer[chunkKeys.length];
    if (!connected()) {
      misses.add(chunkKeys.length);
      return out;
    }
    if (!reserveReads(chunkKeys.length)) {
      misses.add(chunkKeys.length);
      return out;
    }
    List<java.util.concurrent.CompletableFuture<ChunkBuffer>> replies;
    try {
      if (getClient != null) {
        replies = getClient.get(redisKeys(chunkKeys));
      } else if (clusterGets != null) {
        replies = clusterGets.get(redisKeys(chunkKeys));
      } else {
        replies = lettuceGets(chunkKeys);
      }
    } catch (IOException | RuntimeException e) {
      inFlightReads.addAndGet(-chunkKeys.length);
      errors.record(
          e instanceof RejectedRequestException r
                  && r.reason() == RejectedRequestException.Reason.BACKLOG
              ? ErrorKind.BACKLOG
              : ErrorKind.UNAVAILABLE,
          "get from " + redacted() + " failed",
          e);
      misses.add(chunkKeys.length);
      return out;
    }
    for (var f : replies) {
      f.whenComplete((v, err) -> inFlightReads.decrementAndGet());
    }
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
    for (int i = 0; i < out.length; i++) {
      var f = replies.get(i);
      try {
        long left = Math.max(0, deadline - System.nanoTime());
        out[i] = f.get(left, TimeUnit.NANOSECONDS);
      } catch (TimeoutException e) {
        errors.record(ErrorKind.TIMEOUT, "GET took longer than " + timeoutMillis + " ms", e);
        releaseWhenDone(f);
      } catch (ExecutionException e) {
        errors.record(kindOf(e.getCause()), "GET failed", e.getCause());
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        releaseWhenDone(f);
      }
      (out[i] == null ? misses : hits).increment();
    }
    return out;
  }

  private byte[][] redisKeys(ChunkKey[] chunkKeys) {
    byte[][] k = new byte[chunkKeys.length][];
    for (int i = 0; i < k.length; i++) {
      k[i] = redisKey(chunkKeys[i]);
    }
    return k;
  }

  /** Pipelined GETs through Lettuce (TLS); a rejected command fails them all. */
  private List<java.util.concurrent.CompletableFuture<ChunkBuffer>> lettuceGets(ChunkKey[] keys) {
    List<java.util.concurrent.CompletableFuture<ChunkBuffer>> replies = new ArrayList<>();
    try {
      for (ChunkKey k : keys) {
        replies.add(strings.get(redisKey(k)).toCompletableFuture());
      }
    } catch (RuntimeException e) {
      replies.forEach(RedisStore::releaseWhenDone);
      throw e;
    }
    return replies;
  }

  /** Releases a reply that nobody will receive, whenever it arrives. */
  private static void releaseWhenDone(java.util.concurrent.CompletionStage<ChunkBuffer> f) {
    f.whenComplete(
        (b, err) -> {
          if (b != null) {
            b.release();
          }
        });
  }

  /** Remote chunks cannot be pinned; reports whether the chunk is there. */
  @Override
  public boolean pin(ChunkKey key) {
    return contains(key);
  }

  @Override
  public void unpin(ChunkKey key) {}

  @Override
  public boolean remove(ChunkKey key) {
    checkOpen();
    if (!connected()) {
      return false;
    }
    try {
      Long n = await(keys.del(redisKey(key)), "DEL");
      return n != null && n > 0;
    } catch (RuntimeException e) {
      errors.record(ErrorKind.UNAVAILABLE, "DEL rejected", e);
      return false;
    }
  }

  @Override
  public long timeouts() {
    return errors.count(ErrorKind.TIMEOUT);
  }

  @Override
  public StoreStats stats() {
    return new StoreStats(
        hits.sum(),
        misses.sum(),
        puts.sum(),
        duplicatePuts.sum(),
        droppedPuts.sum(),
        0,
        -1,
        -1,
        errorCounts());
  }

  /** Errors by kind ({@code unavailable}, {@code timeout}, {@code error}, ...). */
  public java.util.Map<ErrorKind, Long> errorCounts() {
    java.util.Map<ErrorKind, Long> m = errors.counts();
    if (codec.noBuffer.sum() > 0) {
      m.put(ErrorKind.NO_BUFFER, codec.noBuffer.sum());
    }
    return m;
  }

  /** Puts sent and not yet acknowledged. */
  public int inFlightPuts() {
    return inFlightPuts.get();
  }

  /**
   * Waits until every {@code SET} sent has been answered or failed (its buffer released, its
   * outcome counted); a write the server acknowledged is visible to every connection. Woken by the
   * last reply; does not poll. Puts in flight have no time limit of their own, so against a server
   * that stopped answering this returns false at the timeout.
   */
  @Override
  public boolean awaitIdle(long timeoutMillis) throws InterruptedException {
    return inFlightPuts.awaitZero(timeoutMillis);
  }

  /**
   * Waits up to {@code remote_timeout_ms} for puts in flight, then closes the connection and the
   * client; puts still in flight are released as they fail.
   */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    reconnector.shutdownNow();
    if (connected()) {
      try {
        inFlightPuts.awaitZero(
            timeoutMillis); // let puts in flight land before the connection closes
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
    synchronized (connectLock) {
      StatefulConnection<byte[], ChunkBuffer> c = connection;
      if (c != null) {
        c.close();
      }
    }
    Duration quiet = Duration.ZERO;
    Duration timeout = Duration.ofMillis(Math.max(1000, timeoutMillis));
    if (client != null) {
      client.shutdown(quiet, timeout);
    } else {
      clusterClient.shutdown(quiet, timeout);
    }
    resources.shutdown(0, timeout.toMillis(), TimeUnit.MILLISECONDS);
    if (getClient != null) {
      getClient.close();
    }
    if (clusterGets != null) {
      clusterGets.close();
    }
  }

  private void checkOpen() {
    if (closed) {
      throw new IllegalStateException("RedisStore is closed");
    }
  }

  @Override
  public String toString() {
    return "RedisStore(" + redacted() + ")";
  }
}
