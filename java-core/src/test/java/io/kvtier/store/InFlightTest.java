package io.kvtier.store;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.testing.Await;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

class InFlightTest {
  @Test
  void awaitZero_withNothingInFlight_returnsAtOnce() throws Exception {
    InFlight f = new InFlight();
    assertTrue(f.awaitZero(0));
    assertEquals(1, f.increment());
    f.decrement();
    assertTrue(f.awaitZero(0));
  }

  @Test
  void awaitZero_withWorkInFlight_timesOutWithFalse() throws Exception {
    InFlight f = new InFlight();
    f.increment();
    assertFalse(f.awaitZero(0), "an expired wait reports the work still in flight");
    assertEquals(1, f.get());
  }

  @Test
  void lastDecrement_wakesAWaitingThread() throws Exception {
    InFlight f = new InFlight();
    f.increment();
    f.increment();
    CompletableFuture<Boolean> idle = new CompletableFuture<>();
    Thread waiter =
        new Thread(
            () -> {
              try {
                idle.complete(f.awaitZero(TimeUnit.MINUTES.toMillis(5)));
              } catch (Throwable t) {
                idle.completeExceptionally(t);
              }
            });
    waiter.start();
    Await.until("the waiter to wait", () -> waiter.getState() == Thread.State.TIMED_WAITING);
    f.decrement();
    assertEquals(1, f.get());
    f.decrement();
    assertTrue(idle.get(60, TimeUnit.SECONDS), "woken by the decrement to zero");
    waiter.join();
  }

  @Test
  void decrement_withoutIncrement_throwsAndKeepsZero() {
    InFlight f = new InFlight();
    assertThrows(IllegalStateException.class, f::decrement);
    assertEquals(0, f.get());
  }
}
