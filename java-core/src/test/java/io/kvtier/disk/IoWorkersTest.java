package io.kvtier.disk;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicIntegerArray;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** Priorities, parking when idle, wake-up on submit, shutdown and the submit-versus-close race. */
class IoWorkersTest {
  static final AtomicInteger POOLS = new AtomicInteger();

  final String prefix = "kvtier-test-io-" + POOLS.incrementAndGet() + "-";
  IoWorkers workers;

  @AfterEach
  void tearDown() {
    if (workers != null) {
      workers.shutdown(60_000);
    }
  }

  /** A task that records its name when run and counts cancellations. */
  record Recorded(String name, List<String> ran, AtomicInteger cancelled)
      implements IoWorkers.Task {
    @Override
    public void run() {
      ran.add(name);
    }

    @Override
    public void cancel() {
      cancelled.incrementAndGet();
    }
  }

  /** A task that blocks its worker until {@code gate} opens, saying when it started. */
  record Blocking(CountDownLatch started, CountDownLatch gate) implements IoWorkers.Task {
    @Override
    public void run() {
      started.countDown();
      try {
        gate.await();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }

    @Override
    public void cancel() {}
  }

  List<Thread> threads() {
    List<Thread> out = new ArrayList<>();
    for (Thread t : Thread.getAllStackTraces().keySet()) {
      if (t.getName().startsWith(prefix)) {
        out.add(t);
      }
    }
    return out;
  }

  /**
   * Waits (yielding, no sleep) until {@code t} leaves RUNNABLE; returns the state it settles in.
   */
  static Thread.State settledState(Thread t) {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    Thread.State s;
    while ((s = t.getState()) == Thread.State.RUNNABLE && System.nanoTime() < deadline) {
      Thread.yield();
    }
    return s;
  }

  @Test
  void constructor_noThreads_throws() {
    assertThrows(IllegalArgumentException.class, () -> new IoWorkers(0, 3, prefix));
  }

  @Test
  void submit_unknownPriority_throws() {
    workers = new IoWorkers(1, 3, prefix);
    Recorded t = new Recorded("x", new CopyOnWriteArrayList<>(), new AtomicInteger());
    assertThrows(IndexOutOfBoundsException.class, () -> workers.submit(3, t));
    assertThrows(IndexOutOfBoundsException.class, () -> workers.submit(-1, t));
  }

  @Test
  void queuedTasks_runByPriority_thenInSubmissionOrder() throws Exception {
    workers = new IoWorkers(1, 3, prefix);
    CountDownLatch started = new CountDownLatch(1);
    CountDownLatch gate = new CountDownLatch(1);
    assertTrue(workers.submit(0, new Blocking(started, gate)));
    assertTrue(started.await(60, TimeUnit.SECONDS), "the worker took the blocking task");
    List<String> ran = new CopyOnWriteArrayList<>();
    AtomicInteger cancelled = new AtomicInteger();
    String[][] submissions = {{"2", "put-a"}, {"1", "delete-a"}, {"0", "prefetch-a"}};
    String[][] more = {{"2", "put-b"}, {"0", "prefetch-b"}, {"1", "delete-b"}};
    for (String[][] batch : new String[][][] {submissions, more}) {
      for (String[] s : batch) {
        workers.submit(Integer.parseInt(s[0]), new Recorded(s[1], ran, cancelled));
      }
    }
    gate.countDown();
    assertTrue(workers.awaitIdle(60_000));
    assertEquals(
        List.of("prefetch-a", "prefetch-b", "delete-a", "delete-b", "put-a", "put-b"), ran);
    assertEquals(0, cancelled.get());
  }

  @Test
  void idleWorkers_parkUntilWoken_withoutTimedPolling() throws Exception {
    workers = new IoWorkers(2, 3, prefix);
    List<Thread> threads = threads();
    assertEquals(2, threads.size());
    for (Thread t : threads) {
      assertEquals(
          Thread.State.WAITING, settledState(t), t.getName() + " should wait without a timeout");
    }
    for (int round = 0; round < 3; round++) { // a parked worker is woken by submit, every time
      CountDownLatch ran = new CountDownLatch(1);
      workers.submit(
          2,
          new IoWorkers.Task() {
            @Override
            public void run() {
              ran.countDown();
            }

            @Override
            public void cancel() {}
          });
      assertTrue(ran.await(60, TimeUnit.SECONDS), "a submitted task woke an idle worker");
      assertTrue(workers.awaitIdle(60_000));
      for (Thread t : threads) {
        assertEquals(Thread.State.WAITING, settledState(t), t.getName());
      }
    }
  }

  @Test
  void shutdown_runsWhatIsQueued_thenRefusesAndCancels() throws Exception {
    workers = new IoWorkers(2, 3, prefix);
    List<String> ran = new CopyOnWriteArrayList<>();
    AtomicInteger cancelled = new AtomicInteger();
    for (int i = 0; i < 20; i++) {
      assertTrue(workers.submit(i % 3, new Recorded("t" + i, ran, cancelled)));
    }
    assertEquals(0, workers.shutdown(60_000));
    assertEquals(20, ran.size());
    assertTrue(workers.terminated());
    assertFalse(workers.submit(0, new Recorded("late", ran, cancelled)));
    assertEquals(1, cancelled.get(), "a refused task is cancelled at once");
    assertEquals(0, workers.pending());
    assertEquals(0, workers.shutdown(60_000), "idempotent");
  }

  @Test
  void shutdown_pastItsTime_cancelsWhatIsStillQueued_andBusyWorkersExitLater() throws Exception {
    workers = new IoWorkers(1, 3, prefix);
    CountDownLatch started = new CountDownLatch(1);
    CountDownLatch gate = new CountDownLatch(1);
    workers.submit(2, new Blocking(started, gate));
    assertTrue(started.await(60, TimeUnit.SECONDS));
    List<String> ran = new CopyOnWriteArrayList<>();
    AtomicInteger cancelled = new AtomicInteger();
    for (int i = 0; i < 3; i++) {
      workers.submit(i, new Recorded("t" + i, ran, cancelled));
    }
    // The only worker is held at the gate, which opens only after shutdown returns, so the
    // deadline passes whatever it is.
    assertEquals(3, workers.shutdown(1));
    assertEquals(3, cancelled.get());
    assertFalse(workers.terminated());
    gate.countDown();
    for (Thread t : threads()) {
      t.join(60_000);
    }
    assertTrue(workers.terminated(), "the busy worker exits once its task is done");
    assertTrue(ran.isEmpty());
    assertEquals(0, workers.pending());
  }

  @Test
  void submitRacingShutdown_everyTaskIsRunOrCancelledExactlyOnce() throws Exception {
    int submitters = 4;
    int perSubmitter = 200;
    for (int round = 0; round < 20; round++) {
      IoWorkers pool = new IoWorkers(2, 3, prefix);
      AtomicIntegerArray calls = new AtomicIntegerArray(submitters * perSubmitter);
      CyclicBarrier start = new CyclicBarrier(submitters + 1);
      List<Thread> threads = new ArrayList<>();
      for (int s = 0; s < submitters; s++) {
        int base = s * perSubmitter;
        Thread t =
            new Thread(
                () -> {
                  try {
                    start.await();
                  } catch (Exception e) {
                    throw new AssertionError(e);
                  }
                  for (int i = 0; i < perSubmitter; i++) {
                    int id = base + i;
                    pool.submit(
                        id % 3,
                        new IoWorkers.Task() {
                          @Override
                          public void run() {
                            calls.incrementAndGet(id);
                          }

                          @Override
                          public void cancel() {
                            calls.incrementAndGet(id);
                          }
                        });
                  }
                });
        t.start();
        threads.add(t);
      }
      start.await();
      pool.shutdown(60_000);
      for (Thread t : threads) {
        t.join(60_000);
      }
      for (int i = 0; i < calls.length(); i++) {
        assertEquals(1, calls.get(i), "task " + i + " in round " + round);
      }
      assertEquals(0, pool.pending(), "nothing stranded in the queue");
      assertTrue(pool.terminated());
    }
  }
}
