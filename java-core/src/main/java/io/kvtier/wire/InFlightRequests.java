package io.kvtier.wire;

import io.kvtier.wire.RejectedRequestException.Reason;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * The requests sent on one connection (one channel: a new connection starts a new instance) whose
 * replies have not all come, in the order they were sent, by id. Decoders find a reply's request
 * here, by id ({@link #answer(int, int, Object)}) or, for protocols that answer in order, as the
 * {@link #oldest()}.
 *
 * <p>Implementation note. A request enters in {@link #add} (before its bytes are written) and
 * leaves when every part is answered, when it fails, or when the connection closes ({@link #close}:
 * every request left fails, and later adds are refused, so none is stranded). What a deadline does
 * depends on the reply order:
 *
 * <pre>
 *   BY_ID     the request is forgotten at once; a reply that comes later finds no request and its
 *             value is released (a silent peer leaves nothing behind)
 *   IN_ORDER  the request keeps its place, since the reply stream still holds its replies; they
 *             are matched when they come and their values released
 * </pre>
 *
 * The bound counts parts (expected replies) of the requests held; a request that would exceed it is
 * refused ({@link Reason#BACKLOG}).
 *
 * <p>Thread-safe; every method is short and non-blocking.
 */
public final class InFlightRequests {
  /** How replies find their requests. */
  public enum ReplyOrder {
    /** Each reply names its request's id (kvtier's protocol). */
    BY_ID,
    /** Replies come in the order the requests were sent (RESP). */
    IN_ORDER
  }

  private final int maxReplies;
  private final ReplyOrder order;
  private final String where;
  private final LinkedHashMap<Integer, Request<?>> byId = new LinkedHashMap<>(); // guarded by this
  private int replies; // guarded by this: parts of the requests held
  private int nextId = 1; // guarded by this
  private IOException closed; // guarded by this

  /**
   * @param maxReplies the most parts outstanding at once
   * @param where the peer, for messages
   */
  public InFlightRequests(int maxReplies, ReplyOrder order, String where) {
    this.maxReplies = io.kvtier.Checks.checkPositive(maxReplies, "maxReplies");
    this.order = order;
    this.where = where;
  }

  /**
   * Registers {@code r} under a new id.
   *
   * @throws RejectedRequestException ({@link Reason#CLOSED}) after {@link #close}, ({@link
   *     Reason#BACKLOG}) if its parts would exceed the bound
   */
  synchronized void add(Request<?> r) throws RejectedRequestException {
    if (closed != null) {
      throw new RejectedRequestException(Reason.CLOSED, closed.getMessage());
    }
    if (replies + r.parts() > maxReplies) {
      throw new RejectedRequestException(
          Reason.BACKLOG,
          replies + " replies outstanding from " + where + " (at most " + maxReplies + ")");
    }
    int id;
    do {
      id = nextId++;
    } while (id == 0 || byId.containsKey(id)); // ids wrap around; 0 is never used
    r.registered(this, id);
    byId.put(id, r);
    replies += r.parts();
  }

  /** The request sent with {@code id}, or null if it is not (or no longer) held. */
  public synchronized Request<?> get(int id) {
    return byId.get(id);
  }

  /** The request sent first of those held, or null. */
  public synchronized Request<?> oldest() {
    Iterator<Request<?>> it = byId.values().iterator();
    return it.hasNext() ? it.next() : null;
  }

  /** Whether part {@code part} of request {@code id} still waits for its value. */
  public boolean wants(int id, int part) {
    Request<?> r = get(id);
    return r != null && r.wants(part);
  }

  /**
   * Part {@code part} of request {@code id} is answered with {@code value}; a value whose request
   * is gone (timed out, unknown id) or whose part ended is released.
   */
  public void answer(int id, int part, Object value) {
    Request<?> r = get(id);
    if (r == null) {
      Request.release(value);
      return;
    }
    answer(r, part, value);
  }

  /** Like {@link #answer(int, int, Object)} for a request already found ({@link #oldest()}). */
  public void answer(Request<?> r, int part, Object value) {
    if (r.answer(part, value)) {
      done(r);
    }
  }

  /** Part {@code part} of {@code r} is answered with an error. */
  public void answerError(Request<?> r, int part, Throwable error) {
    if (r.answerError(part, error)) {
      done(r);
    }
  }

  /** Every open part of request {@code id}, if held, fails with {@code error}. */
  public void fail(int id, Throwable error) {
    Request<?> r = get(id);
    if (r != null) {
      fail(r, error);
    }
  }

  /** Every open part of {@code r} fails with {@code error}, and it is forgotten. */
  public void fail(Request<?> r, Throwable error) {
    remove(r);
    r.fail(error);
  }

  private void done(Request<?> r) {
    remove(r); // already done by the request on its last answer; idempotent
    r.cancelDeadline();
  }

  /** Takes {@code r} out; idempotent. Called by {@code r} itself on its last answer. */
  synchronized void forget(Request<?> r) {
    remove(r);
  }

  private synchronized void remove(Request<?> r) {
    if (byId.remove(r.id(), r)) {
      replies -= r.parts();
    }
  }

  /**
   * Times {@code r} out after {@code millis} on {@code timer} (the channel's event loop), as the
   * class note says; if the timer refuses (shutting down), {@code r} fails now.
   */
  void startDeadline(Request<?> r, ScheduledExecutorService timer, long millis) {
    try {
      r.deadline(timer.schedule(() -> expire(r, millis), millis, TimeUnit.MILLISECONDS));
    } catch (RejectedExecutionException e) {
      fail(r, new IOException("connection to " + where + " is shutting down", e));
    }
  }

  private void expire(Request<?> r, long millis) {
    if (order == ReplyOrder.BY_ID) {
      remove(r);
    }
    r.fail(new TimeoutException("no reply from " + where + " within " + millis + " ms"));
  }

  /**
   * Fails every request held with {@code why} and refuses later ones; the connection is gone.
   * Idempotent: the first reason stays.
   */
  public void close(IOException why) {
    List<Request<?>> left;
    synchronized (this) {
      if (closed != null) {
        return;
      }
      closed = why;
      left = new ArrayList<>(byId.values());
      byId.clear();
      replies = 0;
    }
    for (Request<?> r : left) {
      r.fail(why);
    }
  }

  /** Requests held (sent, not fully answered; timed-out ones too while their place is kept). */
  public synchronized int size() {
    return byId.size();
  }

  /** Parts of the requests held, against the bound. */
  public synchronized int outstandingReplies() {
    return replies;
  }
}
