package io.kvtier.engine;

import io.kvtier.key.ChunkKey;
import io.kvtier.store.TieredStore;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongSupplier;

/**
 * The chunks each request's lookup pinned, held as a lease that ends when the request is unpinned
 * or when it has been held longer than the pin timeout (a scheduler that lost track of a request
 * must not keep its chunks forever).
 *
 * <p>Thread-safe: leases live in a concurrent map and a lease is released by whoever removes it
 * first ({@link #release}, {@link #expire}, {@link #releaseAll}), exactly once.
 */
final class PinLeases {
  private static final System.Logger LOG = System.getLogger(PinLeases.class.getName());

  /** The chunks a request's lookup pinned, and when (on the clock). */
  private record Lease(List<ChunkKey> keys, long pinnedAtNanos) {}

  private final TieredStore tiers;
  private final LongSupplier nanoClock;
  private final long timeoutNanos;
  private final Map<Long, Lease> byRequest = new ConcurrentHashMap<>();
  private final LongAdder expired = new LongAdder();

  /**
   * @param timeoutNanos how long a lease may be held before {@link #expire} releases it
   */
  PinLeases(TieredStore tiers, LongSupplier nanoClock, long timeoutNanos) {
    this.tiers = tiers;
    this.nanoClock = nanoClock;
    this.timeoutNanos = timeoutNanos;
  }

  /**
   * Records that {@code requestId} holds pins on {@code keys} (already pinned by the caller),
   * replacing and releasing an earlier lease of the same request.
   */
  void hold(long requestId, List<ChunkKey> keys) {
    Lease before =
        keys.isEmpty()
            ? byRequest.remove(requestId)
            : byRequest.put(requestId, new Lease(List.copyOf(keys), nanoClock.getAsLong()));
    unpin(before);
  }

  /** Ends {@code requestId}'s lease; an unknown id is ignored. Idempotent. */
  void release(long requestId) {
    unpin(byRequest.remove(requestId));
  }

  /** Ends every lease (a cache reset). */
  void releaseAll() {
    for (Long requestId : List.copyOf(byRequest.keySet())) {
      release(requestId);
    }
  }

  /** Forgets every lease without unpinning (the tiers are closing and drop their pins anyway). */
  void forgetAll() {
    byRequest.clear();
  }

  /**
   * Ends the leases held longer than the timeout, counts them and logs how many. Never throws.
   *
   * @param timeoutSetting how the timeout is configured, for the log line
   * @return leases ended
   */
  int expire(String timeoutSetting) {
    long now = nanoClock.getAsLong();
    int n = 0;
    for (Map.Entry<Long, Lease> e : byRequest.entrySet()) {
      if (now - e.getValue().pinnedAtNanos() > timeoutNanos
          && byRequest.remove(e.getKey(), e.getValue())) {
        unpin(e.getValue());
        n++;
      }
    }
    if (n > 0) {
      expired.add(n);
      LOG.log(
          System.Logger.Level.WARNING,
          n + " request(s) held pins longer than " + timeoutSetting + "; released");
    }
    return n;
  }

  /** Leases ended by {@link #expire} since start. */
  long expiredCount() {
    return expired.sum();
  }

  private void unpin(Lease lease) {
    if (lease != null && !tiers.isClosed()) {
      lease.keys().forEach(tiers::unpin);
    }
  }
}
