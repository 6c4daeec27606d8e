package io.kvtier.engine;

import io.kvtier.CpuAffinity;
import io.kvtier.key.KeyExtras;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.buffer.ByteBuf;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.SimpleChannelInboundHandler;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollServerDomainSocketChannel;
import io.netty.channel.group.ChannelGroup;
import io.netty.channel.group.DefaultChannelGroup;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.nio.NioServerDomainSocketChannel;
import io.netty.channel.unix.DomainSocketAddress;
import io.netty.handler.codec.LengthFieldBasedFrameDecoder;
import io.netty.handler.codec.TooLongFrameException;
import io.netty.util.concurrent.FastThreadLocalThread;
import java.io.IOException;
import java.net.BindException;
import java.net.ConnectException;
import java.net.SocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteOrder;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Serves a worker's {@link KvEngine} lookups to the scheduler process over a Unix domain socket,
 * for when vLLM runs the scheduler and the workers in different processes.
 *
 * <p>The wire format (version {@value #VERSION}, little-endian, spec in {@code
 * docs/lookup-protocol.md}):
 *
 * <pre>
 *   request = u32 length | u8 op | payload          length counts op and payload, at most 64 MiB
 *   reply   = u32 length | u8 status | payload      status 0 ok, 1 error (payload: UTF-8 message)
 *
 *   HELLO  (0)  u32 version                                   → u32 version
 *   LOOKUP (1)  i64 requestId | u8 flags | i32 n | i32 w | w × i64 | n × i32
 *                                                 → i32 hit, in memory, storing, pending
 *   UNPIN  (2)  i64 requestId                                 → (empty)
 * </pre>
 *
 * A connection starts with HELLO; a HELLO with another version is refused and the connection stays
 * open for another try. A protocol violation (a frame over the limit, an empty frame, an unknown
 * op, a payload whose size does not match its op or token count, unknown flag bits, a request
 * before a successful HELLO) gets an error reply naming it, then the connection is closed. An
 * exception from the engine (bad arguments, engine closed) gets an error reply with its message and
 * the connection stays open. Requests on a connection are answered in order.
 *
 * <p>Implementation: one Netty event loop ({@code kvtier-lookup}, daemon) accepts and serves every
 * connection and calls the engine on that thread: lookups hash in memory and wait on neither disk
 * nor network (a remote tier's answer arrives in the background; until then the reply says
 * pending). Epoll where available, otherwise NIO's Unix domain sockets (Java 16+). Both transports
 * delete the socket file when the listening channel closes.
 *
 * <p>Thread-safe; {@link #close()} stops it.
 */
public final class LookupServer implements AutoCloseable {
  private static final System.Logger LOG = System.getLogger(LookupServer.class.getName());

  /** The protocol version this server speaks. */
  public static final int VERSION = 4;

  /** Largest request a client may send, in bytes after the length field (~16M token ids). */
  public static final int MAX_REQUEST_BYTES = 64 << 20;

  static final byte OP_HELLO = 0;
  static final byte OP_LOOKUP = 1;
  static final byte OP_UNPIN = 2;
  static final byte STATUS_OK = 0;
  static final byte STATUS_ERROR = 1;
  static final int FLAG_PIN = 1;

  /** Bytes of a LOOKUP payload before the token ids: i64 requestId, u8 flags, i32 tokenCount. */
  private static final int LOOKUP_HEADER_BYTES = 17;

  private final KvEngine engine;
  private final Path path;
  private final EventLoopGroup group;
  private final Channel channel;
  private final ChannelGroup connections;
  private final AtomicBoolean closed = new AtomicBoolean();

  private LookupServer(
      KvEngine engine, Path path, EventLoopGroup group, Channel channel, ChannelGroup connections) {
    this.engine = engine;
    this.path = path;
    this.group = group;
    this.channel = channel;
    this.connections = connections;
  }

  /**
   * Serves {@code engine}'s lookups on a Unix domain socket at {@code socketPath}; blocks until it
   * is bound. A missing parent directory is created with mode 0700. A socket file left by a process
   * that is gone is deleted first; a socket someone still listens on is not touched.
   *
   * @throws BindException if another server is listening at {@code socketPath}
   * @throws FileAlreadyExistsException if {@code socketPath} exists and is not a socket
   * @throws IOException if the directory cannot be created or the socket cannot be bound (for
   *     example a path longer than the platform's limit, 107 bytes on Linux)
   */
  public static LookupServer start(KvEngine engine, Path socketPath) throws IOException {
    return start(engine, socketPath, Epoll.isAvailable());
  }

  /** Like {@link #start(KvEngine, Path)}, with the transport chosen (tests run both). */
  static LookupServer start(KvEngine engine, Path socketPath, boolean epoll) throws IOException {
    Path path = socketPath.toAbsolutePath();
    Path dir = path.getParent();
    if (!Files.isDirectory(dir)) {
      Files.createDirectories(
          dir, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
    }
    removeStaleSocket(path);
    removeStaleSockets(dir, path);

    EventLoopGroup group =
        new MultiThreadIoEventLoopGroup(
            1,
            r -> {
              Thread t = new FastThreadLocalThread(CpuAffinity.wrap(r), "kvtier-lookup");
              t.setDaemon(true);
              return t;
            },
            epoll ? EpollIoHandler.newFactory() : NioIoHandler.newFactory());
    ChannelGroup connections = new DefaultChannelGroup("kvtier-lookup", group.next());
    SocketAddress address =
        epoll ? new DomainSocketAddress(path.toString()) : UnixDomainSocketAddress.of(path);
    ServerBootstrap b =
        new ServerBootstrap()
            .group(group)
            .channel(
                epoll ? EpollServerDomainSocketChannel.class : NioServerDomainSocketChannel.class)
            .childHandler(
                new ChannelInitializer<Channel>() {
                  @Override
                  protected void initChannel(Channel ch) {
                    connections.add(ch); // removed again when it closes
                    // u32 LE length at offset 0, stripped; over the limit fails at once.
                    ch.pipeline()
                        .addLast(
                            new LengthFieldBasedFrameDecoder(
                                ByteOrder.LITTLE_ENDIAN, 4 + MAX_REQUEST_BYTES, 0, 4, 0, 4, true),
                            new Connection(engine));
                  }
                });
    Channel channel;
    try {
      channel = b.bind(address).syncUninterruptibly().channel();
    } catch (Exception e) { // Netty rethrows the bind failure undeclared
      group.shutdownGracefully(0, 1, TimeUnit.SECONDS).awaitUninterruptibly();
      throw new IOException("cannot serve lookups on " + path + ": " + e, e);
    }
    LOG.log(
        System.Logger.Level.INFO,
        "kvtier lookup server on " + path + " (" + (epoll ? "epoll" : "nio") + ") for " + engine);
    return new LookupServer(engine, path, group, channel, connections);
  }

  /**
   * Sockets made less than this before or after now are left alone: their server may be binding
   * right now. After the wall clock was set back, a socket can seem made in the future; one made
   * more than this after now is judged like an old one (it cannot be binding if the clock is right,
   * and would otherwise stay until the clock caught up).
   */
  static final long STALE_AFTER_MILLIS = 60_000;

  /**
   * Deletes the sockets of kvtier's lookup servers in {@code dir} that nobody listens on any more
   * (a vLLM killed before it could close them; each start names its socket anew, so they would pile
   * up), except {@code own} and those made in the last {@link #STALE_AFTER_MILLIS}. Never throws: a
   * socket it cannot judge stays.
   *
   * @return sockets deleted
   */
  static int removeStaleSockets(Path dir, Path own) {
    int removed = 0;
    long now = System.currentTimeMillis();
    try (var entries = Files.newDirectoryStream(dir, "kvtier-*.sock")) {
      for (Path p : entries) {
        try {
          if (p.equals(own)
              || Math.abs(now - Files.getLastModifiedTime(p, LinkOption.NOFOLLOW_LINKS).toMillis())
                  < STALE_AFTER_MILLIS) {
            continue;
          }
          removeStaleSocket(p);
          removed += Files.exists(p, LinkOption.NOFOLLOW_LINKS) ? 0 : 1;
        } catch (IOException | RuntimeException e) {
          // in use, not a socket, or gone meanwhile: not ours to delete
        }
      }
    } catch (IOException | RuntimeException e) {
      LOG.log(System.Logger.Level.DEBUG, "cannot list " + dir + " for stale sockets: " + e);
    }
    return removed;
  }

  /**
   * Deletes {@code path} if it is a socket nobody listens on.
   *
   * @throws BindException if a server accepts connections there
   * @throws FileAlreadyExistsException if it exists and is not a socket
   */
  private static void removeStaleSocket(Path path) throws IOException {
    BasicFileAttributes attrs;
    try {
      attrs = Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
    } catch (NoSuchFileException absent) {
      return;
    }
    if (!attrs.isOther()) {
      throw new FileAlreadyExistsException(
          path.toString(), null, "exists and is not a socket; kvtier deletes only stale sockets");
    }
    boolean live;
    try {
      SocketChannel.open(UnixDomainSocketAddress.of(path)).close();
      live = true;
    } catch (ConnectException refused) {
      live = false;
    }
    if (live) {
      throw new BindException(path + " is in use: another process serves lookups there");
    }
    Files.deleteIfExists(path);
    LOG.log(System.Logger.Level.INFO, "deleted stale lookup socket " + path);
  }

  /** The socket's path (absolute). */
  public Path path() {
    return path;
  }

  /** The engine this server answers for. */
  public KvEngine engine() {
    return engine;
  }

  /**
   * Stops accepting, closes every connection, stops the event loop and deletes the socket file.
   * Blocks until done (about a second at most). Idempotent. Does not close the engine.
   */
  @Override
  public void close() {
    if (!closed.compareAndSet(false, true)) {
      return;
    }
    channel.close().awaitUninterruptibly(); // the transport deletes the socket file here
    connections.close().awaitUninterruptibly(); // NIO's loop shutdown alone leaves them open
    group.shutdownGracefully(0, 1, TimeUnit.SECONDS).awaitUninterruptibly();
  }

  @Override
  public String toString() {
    return "LookupServer(" + path + ")";
  }

  /** Thrown inside a connection for a protocol violation: reply, then close. */
  private static final class ProtocolViolation extends Exception {
    private static final long serialVersionUID = 1L;

    ProtocolViolation(String message) {
      super(message, null, false, false);
    }
  }

  /**
   * One client connection. Confined to the event loop. Replies are written as requests are handled
   * and flushed once per read, so a pipelining client gets them in one write and in order.
   */
  private static final class Connection extends SimpleChannelInboundHandler<ByteBuf> {
    private final KvEngine engine;
    private boolean greeted;
    private boolean closing;

    Connection(KvEngine engine) {
      this.engine = engine;
    }

    @Override
    protected void channelRead0(ChannelHandlerContext ctx, ByteBuf frame) {
      if (closing) {
        return; // a violation earlier in this read: the connection is going away
      }
      try {
        handle(ctx, frame);
      } catch (ProtocolViolation e) {
        LOG.log(
            System.Logger.Level.WARNING,
            "lookup client on " + ctx.channel().localAddress() + ": " + e.getMessage());
        closing = true;
        ctx.writeAndFlush(reply(ctx, STATUS_ERROR, e.getMessage()))
            .addListener(ChannelFutureListener.CLOSE);
      }
    }

    private void handle(ChannelHandlerContext ctx, ByteBuf frame) throws ProtocolViolation {
      if (!frame.isReadable()) {
        throw new ProtocolViolation("empty frame: a request starts with an op byte");
      }
      byte op = frame.readByte();
      if (op == OP_HELLO) {
        hello(ctx, frame);
        return;
      }
      if (op != OP_LOOKUP && op != OP_UNPIN) {
        throw new ProtocolViolation("unknown op " + Byte.toUnsignedInt(op));
      }
      if (!greeted) {
        throw new ProtocolViolation("op " + op + " before HELLO: send HELLO version 1 first");
      }
      try {
        if (op == OP_LOOKUP) {
          lookup(ctx, frame);
        } else {
          checkPayload(frame, 8, "UNPIN");
          engine.unpinRequest(frame.readLongLE());
          ctx.write(reply(ctx, STATUS_OK, 0));
        }
      } catch (RuntimeException e) { // the engine's: bad arguments, closed
        String message = e.getMessage() == null ? e.getClass().getName() : e.getMessage();
        ctx.write(reply(ctx, STATUS_ERROR, message));
      }
    }

    private void hello(ChannelHandlerContext ctx, ByteBuf frame) throws ProtocolViolation {
      checkPayload(frame, 4, "HELLO");
      long version = frame.readUnsignedIntLE();
      if (version != VERSION) {
        ctx.write(
            reply(
                ctx,
                STATUS_ERROR,
                "protocol version " + version + " not supported; this server speaks " + VERSION));
        return;
      }
      greeted = true;
      ByteBuf out = reply(ctx, STATUS_OK, 4);
      out.writeIntLE(VERSION);
      ctx.write(out);
    }

    private void lookup(ChannelHandlerContext ctx, ByteBuf frame) throws ProtocolViolation {
      if (frame.readableBytes() < LOOKUP_HEADER_BYTES) {
        throw new ProtocolViolation(
            "LOOKUP payload is "
                + frame.readableBytes()
                + " bytes; at least "
                + LOOKUP_HEADER_BYTES
                + " expected");
      }
      long requestId = frame.readLongLE();
      int flags = frame.readUnsignedByte();
      int tokenCount = frame.readIntLE();
      int extraWords = frame.readIntLE();
      if ((flags & ~FLAG_PIN) != 0) {
        throw new ProtocolViolation(
            "LOOKUP flags 0x" + Integer.toHexString(flags) + ": unknown bits");
      }
      if (extraWords < 0 || extraWords == 1 || extraWords % 2 != 0) {
        throw new ProtocolViolation(
            "LOOKUP has " + extraWords + " key-extra words; 0 or an even number of at least 2");
      }
      if (tokenCount < 0 || 4L * tokenCount + 8L * extraWords != frame.readableBytes()) {
        throw new ProtocolViolation(
            "LOOKUP tokenCount "
                + tokenCount
                + " and "
                + extraWords
                + " key-extra words do not match the "
                + frame.readableBytes()
                + " bytes that follow in the frame");
      }
      long[] words = new long[extraWords];
      for (int i = 0; i < extraWords; i++) {
        words[i] = frame.readLongLE();
      }
      KeyExtras extras = extraWords == 0 ? KeyExtras.NONE : KeyExtras.of(words);
      int[] tokens = new int[tokenCount];
      frame
          .nioBuffer(frame.readerIndex(), 4 * tokenCount)
          .order(ByteOrder.LITTLE_ENDIAN)
          .asIntBuffer()
          .get(tokens);
      int[] hit =
          (flags & FLAG_PIN) != 0
              ? engine.lookupAndPinTiers(requestId, tokens, tokenCount, extras)
              : new int[] {engine.lookup(tokens, tokenCount, extras), -1, 0, 0, -1};
      ByteBuf out = reply(ctx, STATUS_OK, 20);
      for (int word : hit) {
        out.writeIntLE(word);
      }
      ctx.write(out);
    }

    private static void checkPayload(ByteBuf frame, int bytes, String op) throws ProtocolViolation {
      if (frame.readableBytes() != bytes) {
        throw new ProtocolViolation(
            op + " payload is " + frame.readableBytes() + " bytes; " + bytes + " expected");
      }
    }

    /** A reply frame with its header written and room for {@code payloadBytes}. */
    private static ByteBuf reply(ChannelHandlerContext ctx, byte status, int payloadBytes) {
      ByteBuf out = ctx.alloc().buffer(5 + payloadBytes);
      out.writeIntLE(1 + payloadBytes);
      out.writeByte(status);
      return out;
    }

    private static ByteBuf reply(ChannelHandlerContext ctx, byte status, String message) {
      byte[] utf8 = message.getBytes(StandardCharsets.UTF_8);
      return reply(ctx, status, utf8.length).writeBytes(utf8);
    }

    @Override
    public void channelReadComplete(ChannelHandlerContext ctx) {
      ctx.flush();
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
      if (closing) {
        return;
      }
      closing = true;
      if (cause instanceof TooLongFrameException) {
        LOG.log(System.Logger.Level.WARNING, "lookup client sent an oversized frame: " + cause);
        ctx.writeAndFlush(
                reply(
                    ctx,
                    STATUS_ERROR,
                    "frame longer than the limit of " + MAX_REQUEST_BYTES + " bytes"))
            .addListener(ChannelFutureListener.CLOSE);
      } else {
        LOG.log(System.Logger.Level.DEBUG, "lookup connection closed: " + cause);
        ctx.close();
      }
    }
  }
}
