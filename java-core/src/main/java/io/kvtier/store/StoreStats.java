package io.kvtier.store;

import java.util.Collections;
import java.util.EnumMap;
import java.util.Map;

/**
 * A snapshot of a store's counters. Immutable.
 *
 * @param hits gets that returned a chunk
 * @param misses gets that found nothing (including chunks found corrupt or unreadable)
 * @param puts chunks stored or queued
 * @param duplicatePuts puts of keys already present (no-ops)
 * @param droppedPuts puts refused for want of room or queue space
 * @param evictions chunks evicted to make room
 * @param entries chunks held now
 * @param bytes bytes held now
 * @param errors failures counted by kind (kinds never seen are absent); unmodifiable
 */
public record StoreStats(
    long hits,
    long misses,
    long puts,
    long duplicatePuts,
    long droppedPuts,
    long evictions,
    long entries,
    long bytes,
    Map<ErrorKind, Long> errors) {

  /** A store that has counted nothing and holds nothing. */
  public static final StoreStats EMPTY = new StoreStats(0, 0, 0, 0, 0, 0, 0, 0, Map.of());

  /** Copies {@code errors}. */
  public StoreStats {
    errors = errors.isEmpty() ? Map.of() : Collections.unmodifiableMap(new EnumMap<>(errors));
  }

  /** Failures of every kind together. */
  public long errorCount() {
    return errors.values().stream().mapToLong(Long::longValue).sum();
  }
}
