package io.kvtier.disk;

import static io.kvtier.Checks.checkPositive;

import io.kvtier.store.InFlight;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

/**
 * A fixed set of named daemon threads running I/O tasks from queues of descending priority.
 *
 * <p>Implementation note. Submitting must cost the caller (vLLM's step loop) next to nothing, so it
 * is a lock-free enqueue and nothing else: the caller never wakes a worker. Waking a parked thread
 * is a system call and, on virtual machines, an inter-processor interrupt that costs tens of
 * microseconds. Instead an idle worker polls, parking between polls for {@link #MIN_PARK_NANOS}
 * doubling up to {@link #MAX_PARK_NANOS}; a busy worker takes the next task at once. A task may
 * therefore wait up to {@code MAX_PARK_NANOS} before an idle pool notices it, which is nothing next
 * to a disk write, and idle workers wake about a thousand times a second each.
 *
 * <p>Thread-safe.
 */
final class IoWorkers {
  /** First park of an idle worker, in nanoseconds. */
  static final long MIN_PARK_NANOS = 20_000;

  /** Longest park of an idle worker, in nanoseconds: the most a queued task waits for pickup. */
  static final long MAX_PARK_NANOS = 1_000_000;

  /** A unit of work and what must run if it never does (to release buffers). */
  interface Task {
    void run();

    void cancel();
  }

  private final List<ConcurrentLinkedQueue<Task>> queues = new ArrayList<>();
  private final List<Thread> threads = new ArrayList<>();
  private final InFlight pending = new InFlight(); // queued + running
  private volatile boolean stopping;

  /**
   * Starts {@code threads} workers named {@code namePrefix + i} serving {@code priorities} queues
   * (0 first).
   */
  IoWorkers(int threads, int priorities, String namePrefix) {
    checkPositive(threads, "threads");
    for (int p = 0; p < priorities; p++) {
      queues.add(new ConcurrentLinkedQueue<>());
    }
    for (int i = 0; i < threads; i++) {
      Thread t = new Thread(this::loop, namePrefix + i);
      t.setDaemon(true);
      this.threads.add(t);
      t.start();
    }
  }

  /**
   * Queues {@code task} at {@code priority}. Lock-free; never blocks, never wakes a thread.
   *
   * @return false (after calling {@code task.cancel()}) if the pool is stopping
   */
  boolean submit(int priority, Task task) {
    if (stopping) {
      task.cancel();
      return false;
    }
    pending.increment();
    queues.get(priority).offer(task);
    return true;
  }

  /**
   * Blocks until no task is queued or running, up to {@code timeoutMillis}; tasks submitted while
   * it waits are waited for too.
   *
   * @return false if the time ran out first
   * @throws InterruptedException if interrupted while waiting
   */
  boolean awaitIdle(long timeoutMillis) throws InterruptedException {
    return pending.awaitZero(timeoutMillis);
  }

  private Task poll() {
    for (ConcurrentLinkedQueue<Task> q : queues) {
      Task t = q.poll();
      if (t != null) {
        return t;
      }
    }
    return null;
  }

  private void loop() {
    long park = MIN_PARK_NANOS;
    while (true) {
      Task t = poll();
      if (t == null) {
        if (stopping) {
          return;
        }
        LockSupport.parkNanos(park);
        park = Math.min(MAX_PARK_NANOS, park * 2);
        continue;
      }
      park = MIN_PARK_NANOS;
      try {
        t.run();
      } catch (RuntimeException e) {
        System.getLogger(IoWorkers.class.getName())
            .log(System.Logger.Level.WARNING, "disk tier task failed", e);
      } finally {
        pending.decrement();
      }
    }
  }

  /**
   * Stops intake and lets the workers finish what is queued, up to {@code timeoutMillis}; what is
   * still queued then is cancelled.
   *
   * @return how many tasks were cancelled
   */
  int shutdown(long timeoutMillis) {
    stopping = true;
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
    int cancelled = 0;
    for (Thread t : threads) {
      long left = deadline - System.nanoTime();
      try {
        if (left > 0) {
          t.join(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
        }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        break;
      }
    }
    Task t;
    while ((t = poll()) != null) {
      try {
        t.cancel();
      } finally {
        pending.decrement();
      }
      cancelled++;
    }
    return cancelled;
  }

  /** Whether every worker has exited. */
  boolean terminated() {
    return threads.stream().noneMatch(Thread::isAlive);
  }
}
