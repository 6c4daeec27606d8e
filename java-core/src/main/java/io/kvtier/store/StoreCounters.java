package io.kvtier.store;

import java.util.concurrent.atomic.LongAdder;

/** Contended counters behind {@link StoreStats}. Thread-safe. */
final class StoreCounters {
  final LongAdder hits = new LongAdder();
  final LongAdder misses = new LongAdder();
  final LongAdder puts = new LongAdder();
  final LongAdder duplicatePuts = new LongAdder();
  final LongAdder droppedPuts = new LongAdder();
  final LongAdder evictions = new LongAdder();

  StoreStats snapshot(long entries, long bytes) {
    return new StoreStats(
        hits.sum(),
        misses.sum(),
        puts.sum(),
        duplicatePuts.sum(),
        droppedPuts.sum(),
        evictions.sum(),
        entries,
        bytes);
  }
}
