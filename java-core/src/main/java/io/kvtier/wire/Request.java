package io.kvtier.wire;

import io.kvtier.memory.ChunkBuffer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ScheduledFuture;

/**
 * One request sent on a {@link PipelinedConnection}, waiting for the replies to its {@code parts}
 * (one per key of a batched GET, one for most commands). Each part is a future that completes
 * exactly once: with the reply's value, with the reply's error, as a {@link
 * java.util.concurrent.TimeoutException} when the request's deadline passes first, or with the
 * connection's error when the connection drops or closes.
 *
 * <p>Buffers: a {@link ChunkBuffer} completed into a part belongs to whoever takes it from the
 * future. One that arrives for a part that has already ended (timed out, failed, cancelled) is
 * released here, so a late reply never leaks a pool slot.
 *
 * <p>Thread-safe: replies arrive on the event loop, deadlines fire there, callers wait on any
 * thread.
 */
public final class Request<T> {
  private final Class<T> type;
  private final CompletableFuture<T>[] replies;
  private final boolean[] answered; // guarded by this
  private int unanswered; // guarded by this
  private int firstUnanswered; // guarded by this: the next part of an in-order reply stream
  private ScheduledFuture<?> deadline; // guarded by this
  private int id; // set once by InFlightRequests.add, before the request is written
  private InFlightRequests owner; // set with id

  /**
   * @param type the values replies carry ({@code ChunkBuffer}, {@code Integer}...); a reply of
   *     another type fails its part
   * @throws IllegalArgumentException if {@code parts < 1}
   */
  @SuppressWarnings({"unchecked", "rawtypes"}) // an array of futures
  public Request(Class<T> type, int parts) {
    if (parts < 1) {
      throw new IllegalArgumentException("parts must be at least 1, got " + parts);
    }
    this.type = type;
    this.replies = new CompletableFuture[parts];
    for (int i = 0; i < parts; i++) {
      replies[i] = new CompletableFuture<>();
    }
    this.answered = new boolean[parts];
    this.unanswered = parts;
  }

  /** The id the request went out with (the wire's request id; a sequence number for RESP). */
  public int id() {
    return id;
  }

  void registered(InFlightRequests owner, int id) {
    this.owner = owner;
    this.id = id;
  }

  public int parts() {
    return replies.length;
  }

  /** The reply to part {@code part}; never completed by the caller, except by cancelling it. */
  public CompletableFuture<T> reply(int part) {
    return replies[part];
  }

  /** Every part's reply, in order. */
  public List<CompletableFuture<T>> replies() {
    return Collections.unmodifiableList(new ArrayList<>(List.of(replies)));
  }

  /**
   * Whether part {@code part} still waits for its value; false once it ended (timed out, failed,
   * cancelled) or out of range. A decoder reads past a value nobody wants instead of receiving it.
   */
  public boolean wants(int part) {
    return part >= 0 && part < replies.length && !replies[part].isDone();
  }

  /** The first part whose reply has not come, for protocols that answer in order; -1 if none. */
  public synchronized int nextPart() {
    return firstUnanswered < replies.length ? firstUnanswered : -1;
  }

  /**
   * The reply to {@code part} has come with {@code value}. A value that cannot be delivered (the
   * part ended already, was answered before, is out of range, or the value is of the wrong type) is
   * released; the wrong type fails the part. Returns whether every part has now been answered.
   */
  synchronized boolean answer(int part, Object value) {
    if (part < 0 || part >= replies.length || answered[part]) {
      release(value);
      return unanswered == 0;
    }
    markAnswered(part);
    if (value != null && !type.isInstance(value)) {
      release(value);
      replies[part].completeExceptionally(
          new java.io.IOException("a reply of type " + value.getClass().getSimpleName()));
    } else if (!replies[part].complete(type.cast(value))) {
      release(value); // it arrived after the part ended
    }
    return unanswered == 0;
  }

  /** The reply to {@code part} is an error. Returns whether every part has now been answered. */
  synchronized boolean answerError(int part, Throwable error) {
    if (part >= 0 && part < replies.length && !answered[part]) {
      markAnswered(part);
      replies[part].completeExceptionally(error);
    }
    return unanswered == 0;
  }

  /** Marks a part answered; the last one takes the request out of its owner before completing. */
  private void markAnswered(int part) {
    answered[part] = true;
    unanswered--;
    while (firstUnanswered < answered.length && answered[firstUnanswered]) {
      firstUnanswered++;
    }
    if (unanswered == 0 && owner != null) {
      owner.forget(this); // whoever sees the last reply no longer finds the request held
    }
  }

  /** Ends every part still open with {@code error}; values already delivered stay delivered. */
  void fail(Throwable error) {
    cancelDeadline();
    for (CompletableFuture<T> f : replies) {
      f.completeExceptionally(error);
    }
  }

  synchronized void deadline(ScheduledFuture<?> task) {
    deadline = task;
  }

  void cancelDeadline() {
    ScheduledFuture<?> d;
    synchronized (this) {
      d = deadline;
      deadline = null;
    }
    if (d != null) {
      d.cancel(false);
    }
  }

  /** Releases {@code value} if it is a buffer; other values hold nothing. */
  static void release(Object value) {
    if (value instanceof ChunkBuffer b) {
      b.release();
    }
  }
}
