package io.kvtier.engine;

import java.util.Arrays;

/**
 * The durations of recent operations, kept until someone drains them (the vLLM worker does, once
 * per step, for its stats). Bounded: past {@code capacity} undrained samples new ones are not kept
 * but counted in {@link #overflow()}, so an undrained log costs a fixed amount of memory.
 * Thread-safe.
 */
public final class Latencies {
  private final long[] nanos;
  private int size;
  private long overflow;

  /**
   * @param capacity samples kept between two drains
   */
  public Latencies(int capacity) {
    if (capacity <= 0) {
      throw new IllegalArgumentException("capacity must be positive, got " + capacity);
    }
    this.nanos = new long[capacity];
  }

  /** Records one operation that began at {@code beganNanos} ({@link System#nanoTime()}). */
  public void recordSince(long beganNanos) {
    record(System.nanoTime() - beganNanos);
  }

  /** Records one duration in nanoseconds. */
  public synchronized void record(long durationNanos) {
    if (size == nanos.length) {
      overflow++;
      return;
    }
    nanos[size++] = Math.max(0, durationNanos);
  }

  /** The durations recorded since the last drain, in nanoseconds, oldest first. */
  public synchronized long[] drain() {
    long[] out = Arrays.copyOf(nanos, size);
    size = 0;
    return out;
  }

  /** Durations not kept because the log was full. */
  public synchronized long overflow() {
    return overflow;
  }
}
