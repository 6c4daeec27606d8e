package io.kvtier.memory;

import java.lang.ref.Cleaner;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Reports native buffers that became unreachable without being released (after Netty's {@code
 * ResourceLeakDetector}). The level comes from the system property {@code kvtier.leakDetection}:
 * {@code disabled}, {@code simple} (count and log; the default) or {@code paranoid} (also record
 * where each buffer was allocated; the tests run with it).
 *
 * <p>A leaked slot is reported, not reclaimed: its address may still be in use by a copy that holds
 * only the raw address. Thread-safe.
 */
public final class LeakDetector {
  /** How much leak detection costs and tells. */
  public enum Level {
    DISABLED,
    SIMPLE,
    PARANOID
  }

  private static final System.Logger LOG = System.getLogger("io.kvtier.memory.LeakDetector");
  private static final Cleaner CLEANER =
      Cleaner.create(
          r -> {
            Thread t = new Thread(r, "kvtier-leak-detector");
            t.setDaemon(true);
            return t;
          });
  private static final Level LEVEL = parseLevel(System.getProperty("kvtier.leakDetection"));
  private static final AtomicLong LEAKS = new AtomicLong();

  /** The most recent leak reports, for tests; bounded. Guarded by itself. */
  private static final List<String> RECENT = new ArrayList<>();

  private static final int RECENT_MAX = 16;

  private LeakDetector() {}

  static Level parseLevel(String value) {
    if (value == null || value.isBlank()) {
      return Level.SIMPLE;
    }
    try {
      return Level.valueOf(value.trim().toUpperCase(Locale.ROOT));
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException(
          "kvtier.leakDetection=" + value + " is not a level; allowed: disabled, simple, paranoid");
    }
  }

  /** The level in force. */
  public static Level level() {
    return LEVEL;
  }

  /** Leaks reported since the JVM started; each one counted is already in {@link #recentLeaks}. */
  public static long leakCount() {
    return LEAKS.get();
  }

  /** The most recent leak reports (at most 16). */
  public static List<String> recentLeaks() {
    synchronized (RECENT) {
      return List.copyOf(RECENT);
    }
  }

  /** One tracked resource; {@link #close()} on release marks it as not leaked. */
  static final class Track {
    private final State state;
    private final Cleaner.Cleanable cleanable;

    private Track(State state, Cleaner.Cleanable cleanable) {
      this.state = state;
      this.cleanable = cleanable;
    }

    void close() {
      state.released = true;
      cleanable.clean();
    }
  }

  /** Starts tracking {@code referent}; returns null when detection is disabled. */
  static Track track(Object referent, String what) {
    if (LEVEL == Level.DISABLED) {
      return null;
    }
    State state = new State(what, LEVEL == Level.PARANOID ? new Throwable("allocated here") : null);
    return new Track(state, CLEANER.register(referent, state));
  }

  /** The cleaning action; must not refer to the tracked object. */
  private static final class State implements Runnable {
    private final String what;
    private final Throwable site;
    private volatile boolean released;

    State(String what, Throwable site) {
      this.what = what;
      this.site = site;
    }

    @Override
    public void run() {
      if (released) {
        return;
      }
      String report =
          "LEAK: "
              + what
              + " was garbage-collected without release()"
              + (site == null ? "" : "; allocated at " + stack(site));
      synchronized (RECENT) {
        if (RECENT.size() == RECENT_MAX) {
          RECENT.removeFirst();
        }
        RECENT.add(report);
      }
      LEAKS.incrementAndGet(); // after the report: whoever sees the count can read the report
      LOG.log(System.Logger.Level.ERROR, report);
    }

    private static String stack(Throwable t) {
      StringBuilder sb = new StringBuilder();
      for (StackTraceElement e : t.getStackTrace()) {
        sb.append("\n\tat ").append(e);
      }
      return sb.toString();
    }
  }
}
