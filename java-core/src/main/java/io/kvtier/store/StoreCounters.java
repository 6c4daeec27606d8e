package io.kvtier.store;

import java.util.concurrent.atomic.LongAdder;

/** Contended counters behind {@link StoreStats}, shared by the tiers. Thread-safe. */
public final class StoreCounters {
  public final LongAdder hits = new LongAdder();
  public final LongAdder misses = new LongAdder();
  public final LongAdder puts = new LongAdder();
  public final LongAdder duplicatePuts = new LongAdder();
  public final LongAdder droppedPuts = new LongAdder();
  public final LongAdder evictions = new LongAdder();

  /** The counters now, with the tier's current entries and bytes and no errors. */
  public StoreStats snapshot(long entries, long bytes) {
    return snapshot(entries, bytes, java.util.Map.of());
  }

  /** The counters now, with the tier's current entries and bytes and its errors by kind. */
  public StoreStats snapshot(long entries, long bytes, java.util.Map<ErrorKind, Long> errors) {
    return new StoreStats(
        hits.sum(),
        misses.sum(),
        puts.sum(),
        duplicatePuts.sum(),
        droppedPuts.sum(),
        evictions.sum(),
        entries,
        bytes,
        errors);
  }
}
