package io.kvtier.memory;

import static org.junit.jupiter.api.Assertions.fail;

import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The leak check every test of this module ends with ({@link LeakCheckExtension}): native memory
 * that a test leaked fails that test instead of only being logged.
 *
 * <p>A leak is either a pool closed during the test with slots held that do not come back within a
 * bounded wait (deterministic: the owner closes a pool after everything that used it), or a buffer
 * that the garbage collector found unreleased while the test ran (found only if a collection
 * happened to run; its report names where it was allocated, which may be an earlier test).
 *
 * <p>Thread-safe (stateless).
 */
public final class LeakCheck {
  private LeakCheck() {}

  /** What {@link LeakDetector} had counted when a test started. */
  public record Mark(long collectedLeaks, long poolsClosedWithHeldSlots) {}

  /** The counts as they are now. */
  public static Mark mark() {
    return new Mark(LeakDetector.leakCount(), LeakDetector.poolsClosedWithHeldSlots());
  }

  /**
   * Fails if a pool closed since {@code mark} still holds slots after up to {@code waitMillis}
   * (slots in flight on other threads may come back meanwhile; the wait ends as soon as they do),
   * or, unless {@code collectedLeaksAllowed}, if a leaked buffer was collected since {@code mark}.
   *
   * @throws AssertionError naming each leak and, when paranoid, where it was allocated
   * @throws InterruptedException if interrupted while waiting
   */
  public static void assertNoLeaksSince(Mark mark, long waitMillis, boolean collectedLeaksAllowed)
      throws InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(waitMillis);
    List<String> held = LeakDetector.poolsHeldAfterClose(mark.poolsClosedWithHeldSlots());
    while (!held.isEmpty() && System.nanoTime() - deadline < 0) {
      Thread.sleep(10);
      held = LeakDetector.poolsHeldAfterClose(mark.poolsClosedWithHeldSlots());
    }
    if (!held.isEmpty()) {
      fail(
          "native memory leaked: "
              + held.size()
              + " pool(s) closed with slots held that were not released within "
              + waitMillis
              + " ms:\n"
              + String.join("\n", held));
    }
    long collected = LeakDetector.leakCount() - mark.collectedLeaks();
    if (collected > 0 && !collectedLeaksAllowed) {
      List<String> recent = LeakDetector.recentLeaks();
      fail(
          "native memory leaked: "
              + collected
              + " buffer(s) garbage-collected without release() while this test ran; latest:\n"
              + String.join("\n", recent.subList(Math.max(0, recent.size() - 4), recent.size())));
    }
  }
}
