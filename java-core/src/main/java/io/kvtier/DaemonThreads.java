package io.kvtier;

import java.util.concurrent.ThreadFactory;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Thread factories for kvtier's background threads: daemon threads (they never keep the host
 * process, vLLM or the cache server, alive) with names that say what they do ({@code
 * kvtier-disk-read-3}), as seen in thread dumps and profilers, that run on kvtier's CPUs ({@link
 * CpuAffinity}) whatever thread creates them.
 *
 * <p>Stateless and thread-safe; each factory is thread-safe.
 */
public final class DaemonThreads {
  private DaemonThreads() {}

  /** Daemon threads all named {@code name} (for single-thread executors). */
  public static ThreadFactory named(String name) {
    return r -> start(r, name);
  }

  /** Daemon threads named {@code prefix0}, {@code prefix1}, ... in creation order. */
  public static ThreadFactory numbered(String prefix) {
    AtomicInteger n = new AtomicInteger();
    return r -> start(r, prefix + n.getAndIncrement());
  }

  private static Thread start(Runnable r, String name) {
    Thread t = new Thread(CpuAffinity.wrap(r), name);
    t.setDaemon(true);
    return t;
  }
}
