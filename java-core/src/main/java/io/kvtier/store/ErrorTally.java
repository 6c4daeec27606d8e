package io.kvtier.store;

import io.kvtier.config.Redaction;
import java.util.EnumMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.LongAdder;

/**
 * Counts errors by kind and logs the first of each kind only, so a failing disk or server produces
 * one log line per kind of failure rather than one per chunk. What it logs goes through {@link
 * Redaction} (the detail and every message of the exception), so a URL with a password or a secret
 * quoted by a client library does not reach the log.
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
  private final String[] secretUrls;
  private final Kind[] kinds = new Kind[ErrorKind.values().length];

  /** Creates a tally whose log lines start with {@code component}, e.g. {@code "disk tier"}. */
  public ErrorTally(System.Logger log, String component) {
    this(log, component, new String[0]);
  }

  /**
   * Like {@link #ErrorTally(System.Logger, String)}; the passwords in {@code secretUrls} are also
   * masked wherever they appear in a logged line ({@link Redaction#text}).
   */
  public ErrorTally(System.Logger log, String component, String... secretUrls) {
    this.log = log;
    this.component = component;
    this.secretUrls = secretUrls.clone();
    for (int i = 0; i < kinds.length; i++) {
      kinds[i] = new Kind();
    }
  }

  /**
   * Counts one error of {@code kind}; exactly one call per kind, the first to claim it when several
   * race, logs at WARNING with {@code detail} and the exception. Never throws; does not block.
   */
  public void record(ErrorKind kind, String detail, Throwable error) {
    Kind k = kinds[kind.ordinal()];
    k.count.increment();
    if (k.logged.compareAndSet(false, true)) {
      log.log(
          System.Logger.Level.WARNING,
          Redaction.text(
              component
                  + ": "
                  + kind
                  + ": "
                  + detail
                  + " (further errors of this kind are counted, not logged)",
              secretUrls),
          Redaction.throwable(error, secretUrls));
    }
  }

  /** How many errors of {@code kind} were recorded. */
  public long count(ErrorKind kind) {
    return kinds[kind.ordinal()].count.sum();
  }

  /** The kinds counted so far (count above zero) and their counts, in declaration order. */
  public Map<ErrorKind, Long> counts() {
    Map<ErrorKind, Long> out = new EnumMap<>(ErrorKind.class);
    for (ErrorKind kind : ErrorKind.values()) {
      long n = kinds[kind.ordinal()].count.sum();
      if (n > 0) {
        out.put(kind, n);
      }
    }
    return out;
  }
}
