package io.kvtier.store;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;

/**
 * Counts errors by kind and logs the first of each kind only, so a failing disk or server produces
 * one log line per kind of failure rather than one per chunk. Thread-safe.
 */
public final class ErrorTally {
  private final System.Logger log;
  private final String component;
  private final Map<String, LongAdder> counts = new ConcurrentHashMap<>();

  /** Creates a tally whose log lines start with {@code component}, e.g. {@code "disk tier"}. */
  public ErrorTally(System.Logger log, String component) {
    this.log = log;
    this.component = component;
  }

  /**
   * Counts one error of {@code kind}; the first of its kind is logged at WARNING with {@code
   * detail} and the exception. Never throws.
   */
  public void record(String kind, String detail, Throwable error) {
    LongAdder n = counts.computeIfAbsent(kind, k -> new LongAdder());
    n.increment();
    if (n.sum() == 1) {
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
    LongAdder n = counts.get(kind);
    return n == null ? 0 : n.sum();
  }

  /** All counts, by kind, sorted. */
  public Map<String, Long> counts() {
    Map<String, Long> out = new TreeMap<>();
    counts.forEach((k, v) -> out.put(k, v.sum()));
    return out;
  }
}
