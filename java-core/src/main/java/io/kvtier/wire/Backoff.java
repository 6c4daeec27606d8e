package io.kvtier.wire;

import static io.kvtier.Checks.checkPositive;

/**
 * Capped exponential back-off between connection attempts: the first delay is {@code
 * firstDelayNanos}, each next one twice the last, never more than {@code maxDelayNanos}; {@link
 * #reset()} (after a success) starts over.
 *
 * <p>Not thread-safe: its owner guards it ({@link PipelinedConnection} under its state lock).
 */
public final class Backoff {
  private final long firstDelayNanos;
  private final long maxDelayNanos;
  private long nextDelayNanos;

  /**
   * @throws IllegalArgumentException if a delay is not positive or {@code maxDelayNanos <
   *     firstDelayNanos}
   */
  public Backoff(long firstDelayNanos, long maxDelayNanos) {
    this.firstDelayNanos = checkPositive(firstDelayNanos, "firstDelayNanos");
    this.maxDelayNanos = checkPositive(maxDelayNanos, "maxDelayNanos");
    if (maxDelayNanos < firstDelayNanos) {
      throw new IllegalArgumentException(
          "maxDelayNanos must be at least firstDelayNanos ("
              + firstDelayNanos
              + "), got "
              + maxDelayNanos);
    }
    this.nextDelayNanos = firstDelayNanos;
  }

  /** The delay before the next attempt, in nanoseconds; the one after it is doubled (capped). */
  public long nextDelayNanos() {
    long d = nextDelayNanos;
    nextDelayNanos = d > maxDelayNanos / 2 ? maxDelayNanos : d * 2;
    return d;
  }

  /** Starts over at the first delay. Idempotent. */
  public void reset() {
    nextDelayNanos = firstDelayNanos;
  }
}
