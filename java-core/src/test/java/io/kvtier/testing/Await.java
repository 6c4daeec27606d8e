package io.kvtier.testing;

import java.time.Duration;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Supplier;

/**
 * Bounded waits on a condition, for tests whose code under test offers no event to wait on (a
 * process that comes up, a reconnect on a fixed schedule, a garbage collection). The deadline is
 * generous because a wait can only ever fail on it: a condition that holds ends the wait at once,
 * and running out of time is an {@link AssertionError}, never a pass. Where the code under test
 * says when it is done ({@code KvStore.awaitIdle}, a future, a latch), wait on that instead.
 *
 * <p>Polls every {@link #FIRST_POLL_NANOS}, doubling up to {@link #MAX_POLL_NANOS}. Thread-safe.
 */
public final class Await {
  /** How long {@link #until(String, Condition)} waits: minutes would mean a real hang. */
  public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(60);

  /** First pause between two evaluations of a condition, in nanoseconds. */
  static final long FIRST_POLL_NANOS = TimeUnit.MILLISECONDS.toNanos(1);

  /** Longest pause between two evaluations of a condition, in nanoseconds. */
  static final long MAX_POLL_NANOS = TimeUnit.MILLISECONDS.toNanos(50);

  private Await() {}

  /** A condition that may throw (a command run to ask a server, for instance). */
  @FunctionalInterface
  public interface Condition {
    boolean holds() throws Exception;
  }

  /** A value that is not there yet while it is null. */
  @FunctionalInterface
  public interface Probe<T> {
    T get() throws Exception;
  }

  /**
   * Returns once {@code condition} holds; fails after {@link #DEFAULT_TIMEOUT}.
   *
   * @param what what is awaited, for the failure message ("the server to connect")
   * @throws AssertionError if the condition did not hold in time
   * @throws Exception what the condition throws, at once
   */
  public static void until(String what, Condition condition) throws Exception {
    until(what, condition, DEFAULT_TIMEOUT);
  }

  /** Like {@link #until(String, Condition)}; {@code detail} (evaluated on failure) says more. */
  public static void until(String what, Condition condition, Supplier<String> detail)
      throws Exception {
    value(what, () -> condition.holds() ? Boolean.TRUE : null, DEFAULT_TIMEOUT, detail);
  }

  /** Like {@link #until(String, Condition)} with a deadline of {@code timeout}. */
  public static void until(String what, Condition condition, Duration timeout) throws Exception {
    value(what, () -> condition.holds() ? Boolean.TRUE : null, timeout, () -> "");
  }

  /**
   * Returns the first non-null value of {@code probe}; fails after {@link #DEFAULT_TIMEOUT} with
   * {@code detail} (evaluated then) in the message.
   *
   * @throws AssertionError if the probe gave only null in time
   * @throws Exception what the probe throws, at once
   */
  public static <T> T value(String what, Probe<T> probe, Supplier<String> detail) throws Exception {
    return value(what, probe, DEFAULT_TIMEOUT, detail);
  }

  /** Like {@link #value(String, Probe, Supplier)} with a deadline of {@code timeout}. */
  public static <T> T value(String what, Probe<T> probe, Duration timeout, Supplier<String> detail)
      throws Exception {
    long deadline = System.nanoTime() + timeout.toNanos();
    long pause = FIRST_POLL_NANOS;
    while (true) {
      T v = probe.get();
      if (v != null) {
        return v;
      }
      if (System.nanoTime() - deadline > 0) {
        String more = detail.get();
        throw new AssertionError(
            "timed out after "
                + timeout
                + " waiting for "
                + what
                + (more.isEmpty() ? "" : ": " + more));
      }
      LockSupport.parkNanos(pause);
      if (Thread.interrupted()) {
        throw new InterruptedException("interrupted while waiting for " + what);
      }
      pause = Math.min(MAX_POLL_NANOS, pause * 2);
    }
  }
}
