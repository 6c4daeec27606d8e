package io.kvtier.store;

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
 */
public record StoreStats(
    long hits,
    long misses,
    long puts,
    long duplicatePuts,
    long droppedPuts,
    long evictions,
    long entries,
    long bytes) {}
