package io.kvtier.engine;

import io.kvtier.store.ErrorKind;
import io.kvtier.store.StoreStats;
import java.util.ArrayList;
import java.util.List;

/**
 * A snapshot of an engine's counters: its lookups, each tier's {@link StoreStats} (with errors by
 * {@link ErrorKind}), the CPU pool and the pin leases. Immutable.
 *
 * <p>{@link #toArray()} flattens it for the Python bridge in the order of {@link #names()}: the
 * first 23 names keep their historical positions; per-kind error counts of the disk and remote
 * tiers follow as {@code disk_error_<kind>} and {@code remote_error_<kind>}.
 *
 * @param lookupTokens prompt tokens looked up
 * @param hitTokens of those, tokens found stored
 * @param cpu the CPU tier (with everything the tiers below it counted as hits and misses)
 * @param disk the disk tier ({@link StoreStats#EMPTY} without one)
 * @param remote the remote tier ({@link StoreStats#EMPTY} without one)
 * @param poolInUseSlots pool slots held now
 * @param poolMappedBytes pool memory mapped now
 * @param poolAllocationFailures allocations the pool could not serve
 * @param copyDownDropped copies to lower tiers dropped for want of queue space
 * @param expiredPins pin leases ended by the pin timeout
 * @param remoteLookups remote existence questions sent by scheduler lookups
 * @param remoteLookupTimeouts scheduler lookups whose remote answer exceeded the bound (misses)
 * @param remoteLookupsRejected scheduler lookups refused a remote question (too many pending)
 */
public record EngineStats(
    long lookupTokens,
    long hitTokens,
    StoreStats cpu,
    StoreStats disk,
    StoreStats remote,
    long poolInUseSlots,
    long poolMappedBytes,
    long poolAllocationFailures,
    long copyDownDropped,
    long expiredPins,
    long remoteLookups,
    long remoteLookupTimeouts,
    long remoteLookupsRejected) {

  private static final String[] NAMES = buildNames();

  private static String[] buildNames() {
    List<String> n =
        new ArrayList<>(
            List.of(
                "lookup_tokens",
                "hit_tokens",
                "hits",
                "misses",
                "puts",
                "duplicate_puts",
                "dropped_puts",
                "evictions",
                "entries",
                "bytes",
                "pool_in_use_slots",
                "pool_mapped_bytes",
                "pool_allocation_failures",
                "copy_down_dropped",
                "disk_entries",
                "disk_bytes",
                "disk_puts",
                "disk_dropped_puts",
                "disk_errors",
                "expired_pins",
                "remote_hits",
                "remote_puts",
                "remote_dropped_puts",
                "remote_errors",
                "remote_lookups",
                "remote_lookup_timeouts",
                "remote_lookups_rejected"));
    for (String tier : List.of("disk", "remote")) {
      for (ErrorKind kind : ErrorKind.values()) {
        n.add(tier + "_error_" + kind.statName());
      }
    }
    return n.toArray(new String[0]);
  }

  /** Names of the {@link #toArray()} entries, in order. */
  public static String[] names() {
    return NAMES.clone();
  }

  /** The counters in the order of {@link #names()}. */
  public long[] toArray() {
    long[] head = {
      lookupTokens,
      hitTokens,
      cpu.hits(),
      cpu.misses(),
      cpu.puts(),
      cpu.duplicatePuts(),
      cpu.droppedPuts(),
      cpu.evictions(),
      cpu.entries(),
      cpu.bytes(),
      poolInUseSlots,
      poolMappedBytes,
      poolAllocationFailures,
      copyDownDropped,
      disk.entries(),
      disk.bytes(),
      disk.puts(),
      disk.droppedPuts(),
      disk.errorCount(),
      expiredPins,
      remote.hits(),
      remote.puts(),
      remote.droppedPuts(),
      remote.errorCount(),
      remoteLookups,
      remoteLookupTimeouts,
      remoteLookupsRejected
    };
    ErrorKind[] kinds = ErrorKind.values();
    long[] out = java.util.Arrays.copyOf(head, NAMES.length);
    int i = head.length;
    for (StoreStats tier : List.of(disk, remote)) {
      for (ErrorKind kind : kinds) {
        out[i++] = tier.errors().getOrDefault(kind, 0L);
      }
    }
    return out;
  }
}
