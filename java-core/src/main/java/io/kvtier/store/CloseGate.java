package io.kvtier.store;

import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Admits operations until close, and lets close wait (bounded) until the operations admitted before
 * it have left, so that what they use is freed only after them.
 *
 * <p>Implementation note. One {@code int}: the sign bit is "closed", the other 31 bits count the
 * operations inside. {@link #tryEnter()} is a compare-and-set that fails once the sign bit is set,
 * {@link #exit()} a decrement; neither locks. The monitor is only used by {@link #awaitIdle} to
 * sleep until the last {@link #exit()} after close wakes it.
 *
 * <p>Thread-safe.
 */
final class CloseGate {
  private static final int CLOSED = Integer.MIN_VALUE;

  /** {@link #CLOSED} bit | operations inside. */
  private final AtomicInteger state = new AtomicInteger();

  /**
   * Admits one operation, which must call {@link #exit()} exactly once when done.
   *
   * @return false, admitting nothing, once {@link #close()} was called
   */
  boolean tryEnter() {
    for (; ; ) {
      int s = state.get();
      if ((s & CLOSED) != 0) {
        return false;
      }
      if (state.compareAndSet(s, s + 1)) {
        return true;
      }
    }
  }

  /** Ends an operation that {@link #tryEnter()} admitted. */
  void exit() {
    if (state.decrementAndGet() == CLOSED) {
      synchronized (this) {
        notifyAll();
      }
    }
  }

  /**
   * Stops admitting operations. Idempotent.
   *
   * @return true for the call that closed the gate, false for later ones
   */
  boolean close() {
    return (state.getAndUpdate(s -> s | CLOSED) & CLOSED) == 0;
  }

  /** Whether {@link #close()} was called. */
  boolean isClosed() {
    return (state.get() & CLOSED) != 0;
  }

  /** Operations admitted and not yet exited. */
  int inside() {
    return state.get() & ~CLOSED;
  }

  /**
   * Blocks until the gate is closed and no operation is inside, or until {@code timeoutNanos} have
   * passed.
   *
   * @return whether the gate is closed and empty
   * @throws InterruptedException if interrupted while waiting
   */
  boolean awaitIdle(long timeoutNanos) throws InterruptedException {
    long deadline = System.nanoTime() + timeoutNanos;
    synchronized (this) {
      while (state.get() != CLOSED) {
        long left = deadline - System.nanoTime();
        if (left <= 0) {
          return false;
        }
        TimeUnit.NANOSECONDS.timedWait(this, left);
      }
      return true;
    }
  }
}
