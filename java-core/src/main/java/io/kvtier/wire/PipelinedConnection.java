package io.kvtier.wire;

import static io.kvtier.Checks.checkPositive;

import io.kvtier.wire.InFlightRequests.ReplyOrder;
import io.kvtier.wire.RejectedRequestException.Reason;
import io.netty.buffer.ByteBufAllocator;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFuture;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.socket.SocketChannel;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.LongSupplier;
import java.util.function.Supplier;

/**
 * One pipelined client connection to a server, with everything about it that does not depend on the
 * protocol: the Netty channel (opened through {@link SlotReceiveAllocator#client}, so values are
 * received straight into pool slots), the handshake, reconnecting with capped exponential back-off
 * ({@link Backoff}), matching replies to requests ({@link InFlightRequests}), per-request
 * deadlines, a bound on outstanding replies with explicit rejection ({@link
 * RejectedRequestException}), and failing every pending request when the connection drops or
 * closes. The protocol's side — encoding requests, decoding replies, the handshake's content — is a
 * {@link Handler}.
 *
 * <p>Implementation note. The connection holds at most one live link (a channel and its {@link
 * InFlightRequests}); a link is live once its handshake has been answered, and dies with its
 * channel: its requests fail then, and a new link starts with an empty set, so a reply on a new
 * channel can never be matched to a request of an old one. Two ways to (re)connect:
 *
 * <pre>
 *   connectInBackground()  attempts run on the event loops (never blocking a caller); after a
 *                          failed attempt or a lost connection the next one is scheduled after
 *                          the back-off's delay, which a success resets
 *   ensureConnected()      the caller's thread makes the attempt and waits for it; an attempt
 *                          that failed slowly (slowAttemptNanos or more: a timeout) makes later
 *                          callers fail at once for the back-off's delay; a quick refusal does
 *                          not, so a restarted server is found by the next caller
 * </pre>
 *
 * Deadlines run on the channel's event loop; see {@link InFlightRequests} for what a timed-out
 * request leaves behind in each {@link ReplyOrder}.
 *
 * <p>Thread-safe. The event loop group is the caller's (it is not shut down here).
 */
public final class PipelinedConnection implements AutoCloseable {
  /** The protocol's side of a connection. */
  public interface Handler {
    /**
     * Adds the protocol's decoder to a new channel's pipeline and returns it (it receives values
     * into slots); the decoder answers {@code requests}. Runs on the channel's event loop.
     */
    SlotReceiveAllocator.SlotReceiver initChannel(SocketChannel ch, InFlightRequests requests);

    /**
     * What a new connection sends before anything else ({@code HELLO}, {@code AUTH}), or null for
     * nothing; the connection is usable once every part of its reply has come without error.
     */
    default Handshake handshake() {
      return null;
    }

    /** A connection is usable. Called on an event loop or the connecting thread. */
    default void connected(String where) {}

    /** An attempt failed (it is retried as the class note says). */
    default void connectFailed(IOException error) {}

    /** A usable connection was lost (not called for {@link #close()}). */
    default void disconnected(String where) {}
  }

  /**
   * A request's bytes: called once its id is known, on the sending thread; owns what it returns.
   */
  @FunctionalInterface
  public interface Encoder {
    /**
     * Returns the message to write (a {@code ByteBuf}, composite or not) for request {@code id}.
     */
    Object encode(ByteBufAllocator alloc, int id);
  }

  /** The handshake request and its bytes. */
  public record Handshake(Request<?> request, Encoder encoder) {}

  /**
   * @param order how replies find their requests
   * @param connectTimeoutMillis longest TCP connect, in milliseconds
   * @param handshakeTimeoutMillis longest wait for the handshake's reply, in milliseconds
   * @param maxOutstandingReplies most replies outstanding on a connection; beyond, requests are
   *     refused ({@link Reason#BACKLOG})
   * @param firstRetryNanos back-off's first delay, in nanoseconds
   * @param maxRetryNanos back-off's cap, in nanoseconds
   * @param slowAttemptNanos for {@link #ensureConnected()}: a failed attempt that took at least
   *     this long starts a back-off, a quicker one does not, in nanoseconds
   */
  public record Settings(
      ReplyOrder order,
      long connectTimeoutMillis,
      long handshakeTimeoutMillis,
      int maxOutstandingReplies,
      long firstRetryNanos,
      long maxRetryNanos,
      long slowAttemptNanos) {
    /** Validates every number (positive; the back-off's cap at least its first delay). */
    public Settings {
      checkPositive(connectTimeoutMillis, "connectTimeoutMillis");
      checkPositive(handshakeTimeoutMillis, "handshakeTimeoutMillis");
      checkPositive(maxOutstandingReplies, "maxOutstandingReplies");
      checkPositive(slowAttemptNanos, "slowAttemptNanos");
      new Backoff(firstRetryNanos, maxRetryNanos);
    }
  }

  /** A channel and the requests sent on it. */
  private record Link(Channel channel, InFlightRequests requests, String where, Object writeLock) {}

  private final Supplier<InetSocketAddress> address;
  private final EventLoopGroup group;
  private final Settings settings;
  private final Handler handler;
  private final LongSupplier nanoClock;

  private final Object lock = new Object();
  private final Object connectLock = new Object(); // serialises ensureConnected's attempts
  private volatile Link link; // the live link, or null
  private volatile boolean closed; // written under lock
  private boolean background; // guarded by lock: lost links and failed attempts are retried
  private boolean attempting; // guarded by lock: a background attempt is under way
  private ScheduledFuture<?> retry; // guarded by lock
  private final Backoff backoff; // guarded by lock
  private IOException lastFailure; // guarded by lock: the last slow failure, while it gates
  private long lastFailureNanos; // guarded by lock: when lastFailure ended, on nanoClock
  private long retryAtNanos; // guarded by lock: when its back-off ends, on nanoClock

  /**
   * @param address where to connect, asked again for each attempt on the thread making it (a
   *     sentinel's current master); may throw if it cannot say
   * @param group the event loops for the channel, deadlines and background attempts; the caller's
   * @param nanoClock monotonic nanoseconds, like {@link System#nanoTime()}, timing {@link
   *     #ensureConnected()}'s attempts (tests pass a fake one); timeouts run on the event loops
   */
  public PipelinedConnection(
      Supplier<InetSocketAddress> address,
      EventLoopGroup group,
      Settings settings,
      Handler handler,
      LongSupplier nanoClock) {
    this.address = address;
    this.group = group;
    this.settings = settings;
    this.handler = handler;
    this.nanoClock = nanoClock;
    this.backoff = new Backoff(settings.firstRetryNanos(), settings.maxRetryNanos());
  }

  /**
   * Connects now and whenever the connection is lost, in the background; never blocks. Returns the
   * first attempt's outcome (completes normally either way), for a caller that wants to start
   * connected where it can.
   */
  public CompletableFuture<Void> connectInBackground() {
    synchronized (lock) {
      background = true;
    }
    return attempt();
  }

  private CompletableFuture<Void> attempt() {
    synchronized (lock) {
      if (closed || attempting || link != null) {
        return CompletableFuture.completedFuture(null);
      }
      attempting = true;
    }
    return open()
        .handle(
            (l, err) -> {
              synchronized (lock) {
                attempting = false;
              }
              if (err == null) {
                try {
                  adopt(l);
                } catch (RejectedRequestException closedMeanwhile) {
                  // nothing to do: close() won
                }
              } else {
                handler.connectFailed(asIo(err));
                scheduleAttempt();
              }
              return null;
            });
  }

  private void scheduleAttempt() {
    synchronized (lock) {
      if (closed || !background) {
        return;
      }
      try {
        retry = group.schedule(this::attempt, backoff.nextDelayNanos(), TimeUnit.NANOSECONDS);
      } catch (RejectedExecutionException e) {
        // the event loops are shutting down: so is the owner
      }
    }
  }

  /**
   * Returns once a connection is usable, making an attempt on this thread if none is (it waits up
   * to the connect and handshake timeouts).
   *
   * @throws RejectedRequestException ({@link Reason#CLOSED}) after {@link #close()}
   * @throws IOException if the attempt fails, or at once while a slow failure's back-off lasts (the
   *     message says when the last attempt was and why it failed)
   */
  public void ensureConnected() throws IOException {
    if (usable(link)) {
      return;
    }
    synchronized (connectLock) {
      if (usable(link)) {
        return;
      }
      long now = nanoClock.getAsLong();
      synchronized (lock) {
        checkOpen();
        if (lastFailure != null && now - retryAtNanos < 0) {
          throw new IOException(
              "not connected (last attempt "
                  + TimeUnit.NANOSECONDS.toMillis(now - lastFailureNanos)
                  + " ms ago: "
                  + lastFailure.getMessage()
                  + ")",
              lastFailure);
        }
      }
      Link l;
      try {
        l = await(open());
      } catch (IOException e) {
        long end = nanoClock.getAsLong();
        if (end - now >= settings.slowAttemptNanos()) { // a timeout, not a refusal
          synchronized (lock) {
            lastFailure = e;
            lastFailureNanos = end;
            retryAtNanos = end + backoff.nextDelayNanos();
          }
        }
        handler.connectFailed(e);
        throw e;
      }
      adopt(l);
    }
  }

  private Link await(CompletableFuture<Link> f) throws IOException {
    try {
      // open() completes within the connect and handshake timeouts; the margin only guards a bug
      return f.get(
          settings.connectTimeoutMillis() + settings.handshakeTimeoutMillis() + 1000,
          TimeUnit.MILLISECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      f.thenAccept(l -> l.channel().close());
      throw new IOException("interrupted while connecting", e);
    } catch (ExecutionException e) {
      throw asIo(e.getCause());
    } catch (TimeoutException e) {
      f.thenAccept(l -> l.channel().close());
      throw new IOException("connecting took too long", e);
    }
  }

  private static boolean usable(Link l) {
    return l != null && l.channel().isActive();
  }

  /** Opens a channel and completes its handshake; never blocks. */
  private CompletableFuture<Link> open() {
    InetSocketAddress to;
    try {
      to = address.get();
    } catch (RuntimeException e) {
      return CompletableFuture.failedFuture(
          new IOException("cannot find the server: " + e.getMessage(), e));
    }
    String where = to.getHostString() + ":" + to.getPort();
    InFlightRequests requests =
        new InFlightRequests(settings.maxOutstandingReplies(), settings.order(), where);
    CompletableFuture<Link> result = new CompletableFuture<>();
    ChannelFuture connect;
    try {
      connect =
          SlotReceiveAllocator.client(
                  group, settings.connectTimeoutMillis(), ch -> handler.initChannel(ch, requests))
              .connect(to.getHostString(), to.getPort());
    } catch (RuntimeException e) {
      return CompletableFuture.failedFuture(
          new IOException("cannot connect to " + where + ": " + e.getMessage(), e));
    }
    connect.addListener(
        f -> {
          if (!f.isSuccess()) {
            Throwable c = f.cause();
            result.completeExceptionally(
                new IOException("cannot connect to " + where + ": " + c.getMessage(), c));
            return;
          }
          Channel ch = connect.channel();
          if (ch.localAddress() != null && ch.localAddress().equals(ch.remoteAddress())) {
            // TCP's simultaneous open: with nothing listening on a local port in the ephemeral
            // range, the kernel may pick that very port as the source and connect it to itself
            ch.close();
            result.completeExceptionally(
                new IOException("cannot connect to " + where + ": nothing listens there"));
            return;
          }
          Link l = new Link(ch, requests, where, new Object());
          ch.closeFuture()
              .addListener(
                  c -> requests.close(new IOException("connection to " + where + " closed")));
          Handshake h = handler.handshake();
          if (h == null) {
            result.complete(l);
            return;
          }
          try {
            write(l, h.request(), h.encoder(), settings.handshakeTimeoutMillis());
          } catch (IOException e) {
            ch.close();
            result.completeExceptionally(e);
            return;
          }
          CompletableFuture.allOf(h.request().replies().toArray(new CompletableFuture<?>[0]))
              .whenComplete(
                  (v, err) -> {
                    if (err == null) {
                      result.complete(l);
                    } else {
                      ch.close();
                      Throwable cause = unwrap(err);
                      result.completeExceptionally(
                          new IOException("handshake with " + where + " failed: " + cause, cause));
                    }
                  });
        });
    return result;
  }

  /** Makes {@code l} the live link and watches it. */
  private void adopt(Link l) throws RejectedRequestException {
    synchronized (lock) {
      if (closed) {
        l.channel().close();
        throw new RejectedRequestException(Reason.CLOSED, "connection closed");
      }
      link = l;
      lastFailure = null;
      backoff.reset();
    }
    handler.connected(l.where());
    l.channel().closeFuture().addListener(f -> lost(l));
  }

  private void lost(Link l) {
    synchronized (lock) {
      if (link != l) {
        return;
      }
      link = null;
      if (closed) {
        return;
      }
    }
    handler.disconnected(l.where());
    scheduleAttempt();
  }

  /**
   * Registers {@code r}, writes its bytes and starts its deadline (none if {@code deadlineMillis}
   * is 0: it then ends with its reply or the connection). A failed write fails {@code r}. Never
   * blocks.
   *
   * @return the write, for a caller whose message holds a buffer to release once it is sent
   * @throws RejectedRequestException if no connection is usable ({@link Reason#NOT_CONNECTED}), the
   *     bound is reached ({@link Reason#BACKLOG}) or the connection is closed ({@link
   *     Reason#CLOSED}); {@code encoder} was then not called
   */
  public ChannelFuture send(Request<?> r, long deadlineMillis, Encoder encoder)
      throws RejectedRequestException {
    Link l = link;
    if (!usable(l)) {
      throw closed
          ? new RejectedRequestException(Reason.CLOSED, "connection closed")
          : new RejectedRequestException(Reason.NOT_CONNECTED, "not connected");
    }
    return write(l, r, encoder, deadlineMillis);
  }

  private static ChannelFuture write(Link l, Request<?> r, Encoder encoder, long deadlineMillis)
      throws RejectedRequestException {
    ChannelFuture written;
    synchronized (l.writeLock()) { // in-order replies: registration order is write order
      l.requests().add(r);
      Object msg;
      try {
        msg = encoder.encode(l.channel().alloc(), r.id());
      } catch (RuntimeException e) {
        l.requests().fail(r, e);
        throw e;
      }
      written = l.channel().writeAndFlush(msg);
    }
    if (deadlineMillis > 0) {
      l.requests().startDeadline(r, l.channel().eventLoop(), deadlineMillis);
    }
    written.addListener(
        f -> {
          if (!f.isSuccess()) {
            l.requests()
                .fail(
                    r,
                    new IOException("write to " + l.where() + " failed: " + f.cause(), f.cause()));
          }
        });
    return written;
  }

  /** Whether requests can be sent now. */
  public boolean isConnected() {
    return usable(link);
  }

  /** Requests of the live connection not fully answered (0 when there is none). */
  public int pendingRequests() {
    Link l = link;
    return l == null ? 0 : l.requests().size();
  }

  /**
   * Stops reconnecting, fails every pending request ({@link IOException} "closed") and closes the
   * channel, waiting up to a second for it. Idempotent.
   */
  @Override
  public void close() {
    Link l;
    synchronized (lock) {
      if (closed) {
        return;
      }
      closed = true;
      if (retry != null) {
        retry.cancel(false);
      }
      l = link;
      link = null;
    }
    if (l != null) {
      l.requests().close(new IOException("connection to " + l.where() + " closed"));
      l.channel().close().awaitUninterruptibly(1, TimeUnit.SECONDS);
    }
  }

  private void checkOpen() throws RejectedRequestException {
    if (closed) {
      throw new RejectedRequestException(Reason.CLOSED, "connection closed");
    }
  }

  private static Throwable unwrap(Throwable t) {
    return (t instanceof CompletionException || t instanceof ExecutionException)
            && t.getCause() != null
        ? t.getCause()
        : t;
  }

  private static IOException asIo(Throwable t) {
    Throwable c = unwrap(t);
    return c instanceof IOException io ? io : new IOException(c);
  }
}
