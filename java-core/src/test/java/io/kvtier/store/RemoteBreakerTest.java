package io.kvtier.store;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** A remote tier that stops answering costs one timeout, then is left alone for a while. */
class RemoteBreakerTest {
  /** A remote tier that answers (a prefix of 1) or times out, as the test says. */
  static final class Remote implements KvStore {
    volatile boolean frozen;
    final AtomicInteger asked = new AtomicInteger();
    final AtomicInteger puts = new AtomicInteger();
    long timeouts;

    private int ask() {
      asked.incrementAndGet();
      if (frozen) {
        timeouts++; // what a store counts when its request's deadline passes
        return 0;
      }
      return 1;
    }

    @Override
    public boolean contains(ChunkKey key) {
      return ask() == 1;
    }

    @Override
    public CompletableFuture<Integer> prefixLengthAsync(ChunkKey[] keys) {
      return CompletableFuture.completedFuture(ask());
    }

    @Override
    public boolean put(ChunkKey key, ChunkBuffer chunk) {
      puts.incrementAndGet();
      return true;
    }

    @Override
    public ChunkBuffer get(ChunkKey key) {
      ask();
      return null;
    }

    @Override
    public Medium medium() {
      return Medium.REMOTE;
    }

    @Override
    public boolean pin(ChunkKey key) {
      return false;
    }

    @Override
    public void unpin(ChunkKey key) {}

    @Override
    public boolean remove(ChunkKey key) {
      return false;
    }

    @Override
    public long timeouts() {
      return timeouts;
    }

    @Override
    public StoreStats stats() {
      return new StoreStats(0, 0, 0, 0, 0, 0, 0, 0, Map.of(ErrorKind.TIMEOUT, timeouts));
    }

    @Override
    public void close() {}
  }

  static final ChunkKey[] KEYS = {new ChunkKey(1, 1, 1)};

  @Test
  void aTimeoutOpensIt_requestsAreSkippedUntilOneProbe_andAnAnswerClosesIt() throws Exception {
    Remote remote = new Remote();
    long[] now = {1_000};
    RemoteBreaker b = new RemoteBreaker(remote, () -> now[0]);
    assertEquals(1, b.prefixLength(KEYS));
    remote.frozen = true;
    assertEquals(0, b.prefixLength(KEYS)); // one timeout...
    assertTrue(b.isOpen());
    for (int i = 0; i < 10; i++) { // ...then nothing is asked: every request a miss at once
      assertEquals(0, b.prefixLengthAsync(KEYS).get());
      assertFalse(b.contains(KEYS[0]));
      assertEquals(null, b.get(KEYS[0]));
      assertFalse(b.put(KEYS[0], null), "a put while open is dropped");
    }
    assertEquals(2, remote.asked.get(), "the frozen remote was asked once");
    assertEquals(0, remote.puts.get());
    assertEquals(40L, b.stats().errors().get(ErrorKind.SKIPPED));

    now[0] += TimeUnit.MILLISECONDS.toNanos(RemoteBreaker.FIRST_PAUSE_MILLIS);
    assertEquals(0, b.prefixLength(KEYS), "the probe times out too");
    assertEquals(3, remote.asked.get());
    assertEquals(0, b.prefixLength(KEYS));
    assertEquals(3, remote.asked.get(), "open again");
    now[0] += TimeUnit.MILLISECONDS.toNanos(RemoteBreaker.FIRST_PAUSE_MILLIS);
    assertEquals(0, b.prefixLength(KEYS));
    assertEquals(3, remote.asked.get(), "the second pause is twice as long");
    now[0] += TimeUnit.MILLISECONDS.toNanos(RemoteBreaker.FIRST_PAUSE_MILLIS);

    remote.frozen = false;
    assertTrue(b.put(KEYS[0], null) == false, "a put is no probe");
    assertEquals(1, b.prefixLengthAsync(KEYS).get(), "the probe is answered");
    assertFalse(b.isOpen());
    assertEquals(1, b.prefixLength(KEYS));
    assertTrue(b.put(KEYS[0], null));
  }
}
