package io.kvtier.bench;

import java.util.concurrent.locks.LockSupport;
import java.util.function.IntSupplier;

/** Waiting on a remote store's pipeline of puts, shared by the remote benchmarks. */
final class Pipeline {
  private Pipeline() {}

  /**
   * The pipeline is full: wait a little without spinning. A spinning caller would take one of this
   * machine's two cores from the event loops it waits for (redis-benchmark waits in epoll).
   */
  static void full() {
    LockSupport.parkNanos(20_000);
  }

  /** Waits until no put is in flight. */
  static void drain(IntSupplier inFlightPuts) throws InterruptedException {
    while (inFlightPuts.getAsInt() > 0) {
      Thread.sleep(1);
    }
  }
}
