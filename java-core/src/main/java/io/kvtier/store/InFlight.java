package io.kvtier.store;

import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Counts operations in flight (queued writes, requests sent and not yet answered) and lets a thread
 * wait until none is, as {@link KvStore#awaitIdle} does.
 *
 * <p>Thread-safe. {@link #increment} and {@link #decrement} are lock-free, except that the
 * decrement that brings the count to zero takes this object's monitor for a moment to wake the
 * threads in {@link #awaitZero}; neither ever blocks on I/O.
 */
public final class InFlight {
  private final AtomicInteger count = new AtomicInteger();
  private final Object idle = new Object(); // waiters wait on it; notified when count reaches 0

  /** Adds one operation; returns how many are in flight now, this one included. */
  public int increment() {
    return count.incrementAndGet();
  }

  /**
   * Removes one operation; wakes the threads in {@link #awaitZero} if none is left.
   *
   * @throws IllegalStateException if none was in flight (a finish without its start)
   */
  public void decrement() {
    int n = count.decrementAndGet();
    if (n < 0) {
      count.incrementAndGet();
      throw new IllegalStateException("decrement() without a matching increment()");
    }
    if (n == 0) {
      synchronized (idle) {
        idle.notifyAll();
      }
    }
  }

  /** How many operations are in flight now. */
  public int get() {
    return count.get();
  }

  /**
   * Blocks until no operation is in flight, or {@code timeoutMillis} passed. Returns as soon as it
   * sees the count at zero, so under a steady stream of new operations from other threads it may
   * time out even though each operation finishes.
   *
   * @return true if the count was zero, false if the time ran out first
   * @throws InterruptedException if interrupted while waiting
   */
  public boolean awaitZero(long timeoutMillis) throws InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
    synchronized (idle) {
      while (count.get() > 0) {
        long leftNanos = deadline - System.nanoTime();
        if (leftNanos <= 0) {
          return false;
        }
        TimeUnit.NANOSECONDS.timedWait(idle, leftNanos);
      }
      return true;
    }
  }

  @Override
  public String toString() {
    return "InFlight(" + count.get() + ")";
  }
}
