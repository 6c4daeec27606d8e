package io.kvtier.memory;

import java.lang.ref.Cleaner;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Reports native buffers that were not released (after Netty's {@code ResourceLeakDetector}), in
 * two ways:
 *
 * <ul>
 *   <li>a {@link ChunkBuffer} that became unreachable without its last {@code release()} ({@link
 *       #leakCount()}, {@link #recentLeaks()}); found when the garbage collector gets to it;
 *   <li>a {@link ChunkPool} closed while slots were still held, and still holding some ({@link
 *       #poolsHeldAfterClose}): its memory stays mapped until they come back, forever if they were
 *       leaked. Known at once, no garbage collection needed.
 * </ul>
 *
 * <p>The level comes from the system property {@code kvtier.leakDetection}: {@code disabled},
 * {@code simple} (count and log; the default) or {@code paranoid} (also record where each buffer
 * was allocated; the tests run with it, and fail a test that leaks).
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
      Cleaner.create(io.kvtier.DaemonThreads.named("kvtier-leak-detector"));
  private static final Level LEVEL = parseLevel(System.getProperty("kvtier.leakDetection"));
  private static final AtomicLong LEAKS = new AtomicLong();

  /** The most recent leak reports, for tests; bounded. Guarded by itself. */
  private static final List<String> RECENT = new ArrayList<>();

  /** Pools closed with slots held and still holding some, by pool; guarded by itself. */
  private static final Map<ChunkPool, HeldAtClose> HELD_AT_CLOSE = new IdentityHashMap<>();

  /** Pools ever closed with slots held; numbers each report. Guarded by HELD_AT_CLOSE. */
  private static long heldAtCloseReports;

  private record HeldAtClose(long number, String report) {}

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

  /**
   * How many times a pool was closed with slots held since the JVM started; pass it to {@link
   * #poolsHeldAfterClose(long)} to see only the pools closed after this moment.
   */
  public static long poolsClosedWithHeldSlots() {
    synchronized (HELD_AT_CLOSE) {
      return heldAtCloseReports;
    }
  }

  /**
   * Reports of the pools that were closed with slots held after {@code sinceCount} (a value of
   * {@link #poolsClosedWithHeldSlots()}) and still hold some: each names the pool, how many slots
   * it held at close and, when paranoid, where they were allocated.
   */
  public static List<String> poolsHeldAfterClose(long sinceCount) {
    synchronized (HELD_AT_CLOSE) {
      return HELD_AT_CLOSE.values().stream()
          .filter(h -> h.number() > sinceCount)
          .sorted(java.util.Comparator.comparingLong(HeldAtClose::number))
          .map(HeldAtClose::report)
          .toList();
    }
  }

  /**
   * Called by {@link ChunkPool#close()}, under the pool's monitor, when slots are still held; the
   * pool logs the report with {@link #logHeldAtClose} once it has left its monitor.
   */
  static void closedWithHeldSlots(ChunkPool pool, String report) {
    synchronized (HELD_AT_CLOSE) {
      HELD_AT_CLOSE.put(pool, new HeldAtClose(++heldAtCloseReports, report));
    }
  }

  /** Logs a report of {@link #closedWithHeldSlots} at WARNING. */
  static void logHeldAtClose(String report) {
    LOG.log(
        System.Logger.Level.WARNING, report + "; its memory stays mapped until they are released");
  }

  /** Called by a pool reported by {@link #closedWithHeldSlots} once its last slot came back. */
  static void releasedAfterClose(ChunkPool pool) {
    synchronized (HELD_AT_CLOSE) {
      HELD_AT_CLOSE.remove(pool);
    }
  }

  /**
   * Where a buffer is being allocated, for reports: a new throwable when paranoid, else null.
   * Called by the allocating thread.
   */
  static Throwable allocationSite() {
    return LEVEL == Level.PARANOID ? new Throwable("allocated here") : null;
  }

  /** The frames of an allocation site, one {@code \n\tat frame} per line. */
  static String stack(Throwable t) {
    StringBuilder sb = new StringBuilder();
    for (StackTraceElement e : t.getStackTrace()) {
      sb.append("\n\tat ").append(e);
    }
    return sb.toString();
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

  /**
   * Starts tracking {@code referent}; returns null when detection is disabled.
   *
   * @param site where it was allocated ({@link #allocationSite()}), or null
   */
  static Track track(Object referent, String what, Throwable site) {
    if (LEVEL == Level.DISABLED) {
      return null;
    }
    State state = new State(what, site);
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
  }
}
