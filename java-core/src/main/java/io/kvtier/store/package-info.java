/**
 * Tiers: {@link io.kvtier.store.KvStore} (the contract every tier keeps), {@link
 * io.kvtier.store.CpuStore} (chunks in pool slots, evicted by a byte-weighed index) and {@link
 * io.kvtier.store.TieredStore} (the CPU tier in front of lower tiers, with background copy-down and
 * promotion). Shared by the tiers: {@link io.kvtier.store.StoreCounters}, {@link
 * io.kvtier.store.ErrorTally} and {@link io.kvtier.store.InFlight} (operations in flight, awaited
 * by {@link io.kvtier.store.KvStore#awaitIdle}).
 */
package io.kvtier.store;
