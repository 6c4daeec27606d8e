package io.kvtier.memory;

import static io.kvtier.Checks.checkPositive;

import java.util.concurrent.atomic.AtomicLong;

/**
 * Bytes several {@link ChunkPool}s may map together: a pool reserves a slab's bytes before mapping
 * it and gives them back when it unmaps it. Thread-safe.
 */
public final class MemoryBudget {
  private final long limitBytes;
  private final AtomicLong used = new AtomicLong();

  /**
   * @throws IllegalArgumentException if {@code limitBytes} is not positive
   */
  public MemoryBudget(long limitBytes) {
    this.limitBytes = checkPositive(limitBytes, "limitBytes");
  }

  /** Takes {@code bytes} if they fit under the limit; false (nothing taken) if not. */
  public boolean tryReserve(long bytes) {
    long now;
    do {
      now = used.get();
      if (now + bytes > limitBytes) {
        return false;
      }
    } while (!used.compareAndSet(now, now + bytes));
    return true;
  }

  /** Gives back {@code bytes} taken by {@link #tryReserve}. */
  public void release(long bytes) {
    used.addAndGet(-bytes);
  }

  /** Bytes reserved now. */
  public long usedBytes() {
    return used.get();
  }

  /** The limit. */
  public long limitBytes() {
    return limitBytes;
  }
}
