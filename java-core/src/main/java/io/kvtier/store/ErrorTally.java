package io.kvtier.store;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.LongAdder;

/**
 * Counts errors by kind and logs the first of each kind only, so a failing disk or server produces
 * one log line per kind of failure rather than one per chunk.
 *
 * <p>Thread-safe and lock-free. Whether a call logs is decided by a per-kind once-flag, not by
 * reading the count back: two threads that count the first errors of a kind at the same moment both
 * read 2, so a count-based decision would log neither.
 */
public final class ErrorTally {
  /** One kind's count and whether its first error was logged. */
  private static final class Kind {
    final LongAdder count = new LongAdder();
    final AtomicBoolean logged = new AtomicBoolean();
  }

  private final System.Logger log;
  private final String component;
  private final Map<String, Kind> kinds = new ConcurrentHashMap<>();

  /** Creates a tally whose log lines start with {@code component}, e.g. {@code "disk tier"}. */
  public ErrorTally(System.Logger log, String component) {
    this.log = log;
    this.component = component;
  }

  /**
   * Counts one error of {@code kind}; exactly one call per kind, the first to claim it when several
   * race, logs at WARNING with {@code detail} and the exception. Never throws; does not block.
   */
  public void record(String kind, String detail, Throwable error) {
    Kind k = kinds.computeIfAbsent(kind, x -> new Kind());
    k.count.increment();
    if (k.logged.compareAndSet(false, true)) {
      log.log(
          System.Logger.Level.WARNING,
          component
              + ": "
              + kind
              + ": "
              + detail
              + " (further errors of this kind are counted, not logged)",
          error);
    }
  }

  /** How many errors of {@code kind} were recorded. */
  public long count(String kind) {
    Kind k = kinds.get(kind);
    return k == null ? 0 : k.count.sum();
  }

  /** All counts, by kind, sorted. */
  public Map<String, Long> counts() {
    Map<String, Long> out = new TreeMap<>();
    kinds.forEach((name, k) -> out.put(name, k.count.sum()));
    return out;
  }
}
