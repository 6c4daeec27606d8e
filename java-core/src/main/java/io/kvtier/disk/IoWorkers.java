package io.kvtier.disk;

import static io.kvtier.Checks.checkPositive;

import io.kvtier.DaemonThreads;
import io.kvtier.store.InFlight;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.PriorityBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A fixed set of named daemon threads running I/O tasks in order of priority (0 first), first come
 * first served within a priority.
 *
 * <p>Implementation note. One {@link PriorityBlockingQueue} ordered by (priority, submission
 * number). An idle worker blocks in {@code take()} and costs nothing until a task arrives: the
 * submitter's {@code offer} signals one waiting worker (a futex wake, paid only when a worker is
 * parked; a busy pool takes the next task without being woken). Shutdown is a poison pill per
 * worker at a priority below every task's, so workers finish what is queued before they take it.
 *
 * <p>Put versus close: {@link #submit} checks the stopping flag and enqueues under this object's
 * monitor, and {@link #shutdown} sets the flag under it before queueing the pills. So every task
 * accepted is queued ahead of the pills and is run, or cancelled by {@link #shutdown} if its time
 * runs out; a task refused is cancelled at once. No task is ever left in the queue unrun and
 * uncancelled (which would leak the buffer it holds).
 *
 * <p>Thread-safe.
 */
final class IoWorkers {
  private static final System.Logger LOG = System.getLogger(IoWorkers.class.getName());

  /** A unit of work and what must run if it never does (to release buffers). */
  interface Task {
    void run();

    void cancel();
  }

  /** A task with its place in the queue; {@code task == null} is a worker's poison pill. */
  private record Queued(int priority, long seq, Task task) {}

  private final int priorities;
  private final PriorityBlockingQueue<Queued> queue =
      new PriorityBlockingQueue<>(
          64, Comparator.comparingInt(Queued::priority).thenComparingLong(Queued::seq));
  private final AtomicLong seq = new AtomicLong();
  private final List<Thread> threads = new ArrayList<>();
  private final InFlight pending = new InFlight(); // queued + running

  /** Set once, under this object's monitor (see the put-versus-close note above). */
  private volatile boolean stopping;

  /**
   * Starts {@code threads} workers named {@code namePrefix + i} serving {@code priorities}
   * priorities (0 first).
   */
  IoWorkers(int threads, int priorities, String namePrefix) {
    checkPositive(threads, "threads");
    this.priorities = checkPositive(priorities, "priorities");
    for (int i = 0; i < threads; i++) {
      Thread t = DaemonThreads.named(namePrefix + i).newThread(this::loop);
      this.threads.add(t);
      t.start();
    }
  }

  /**
   * Queues {@code task} at {@code priority} and wakes an idle worker if there is one. Never blocks
   * on I/O or on queue space (the queue is unbounded; callers bound what they submit).
   *
   * @return false (after calling {@code task.cancel()}) if the pool is stopping
   * @throws IndexOutOfBoundsException if {@code priority} is not one of this pool's
   */
  boolean submit(int priority, Task task) {
    if (priority < 0 || priority >= priorities) {
      throw new IndexOutOfBoundsException("priority " + priority + " of " + priorities);
    }
    synchronized (this) {
      if (!stopping) {
        pending.increment();
        queue.offer(new Queued(priority, seq.getAndIncrement(), task));
        return true;
      }
    }
    task.cancel(); // outside the monitor: it releases buffers, which may take other locks
    return false;
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

  /** Tasks queued or running. */
  int pending() {
    return pending.get();
  }

  private void loop() {
    while (true) {
      Queued q;
      try {
        q = queue.take(); // parks while the queue is empty
      } catch (InterruptedException e) {
        if (stopping) {
          return;
        }
        continue; // only shutdown stops a worker
      }
      if (q.task() == null) {
        return; // poison pill: every task queued before shutdown has been taken
      }
      try {
        q.task().run();
      } catch (RuntimeException e) {
        LOG.log(System.Logger.Level.WARNING, "disk tier task failed", e);
      } finally {
        pending.decrement();
      }
    }
  }

  /**
   * Stops intake and lets the workers finish what is queued, up to {@code timeoutMillis}; what is
   * still queued then is cancelled. Blocks for up to {@code timeoutMillis}. Idempotent (a second
   * call finds nothing to cancel).
   *
   * @return how many tasks were cancelled
   */
  int shutdown(long timeoutMillis) {
    synchronized (this) {
      stopping = true;
      for (int i = 0; i < threads.size(); i++) {
        queue.offer(new Queued(priorities, seq.getAndIncrement(), null)); // after every task
      }
    }
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
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
    List<Queued> left = new ArrayList<>();
    queue.drainTo(left);
    int cancelled = 0;
    int pills = 0;
    for (Queued q : left) {
      if (q.task() == null) {
        pills++;
        continue;
      }
      try {
        q.task().cancel();
      } finally {
        pending.decrement();
      }
      cancelled++;
    }
    for (int i = 0; i < pills; i++) { // workers still busy past the deadline exit after their task
      queue.offer(new Queued(priorities, seq.getAndIncrement(), null));
    }
    return cancelled;
  }

  /** Whether every worker has exited. */
  boolean terminated() {
    return threads.stream().noneMatch(Thread::isAlive);
  }
}
