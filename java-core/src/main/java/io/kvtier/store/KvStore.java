package io.kvtier.store;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import java.io.IOException;
import java.util.concurrent.CompletableFuture;
import java.util.function.BiConsumer;
import java.util.function.ObjIntConsumer;

/**
 * A tier that stores chunks by key: CPU memory, local disk, a remote store, or several composed.
 *
 * <p>Implementations must comply with:
 *
 * <ul>
 *   <li><b>Visibility.</b> A chunk is visible to {@link #contains} and {@link #get} only after all
 *       its bytes are stored; a failed or partial store leaves nothing visible (DESIGN invariant
 *       3).
 *   <li><b>Ownership.</b> {@link #put} never takes over the caller's reference: a store that keeps
 *       the buffer (or uses it after returning, for an asynchronous write) retains it and releases
 *       it when done. {@link #get} returns a buffer with one reference owned by the caller.
 *   <li><b>No frees under a reader.</b> Evicting or removing a chunk drops the store's reference
 *       only; a buffer returned by {@code get} stays valid until its holder releases it.
 *   <li><b>Pins.</b> A pinned chunk is not evicted until every {@link #pin} has been matched by an
 *       {@link #unpin}; pins nest. {@link #remove} removes even pinned chunks.
 *   <li><b>Errors are counted, not thrown, on the data path.</b> A full store drops the put and
 *       counts it; a corrupt or unreadable chunk is a miss, counted. {@code get} throws {@link
 *       IOException} only for failures the caller should log (never for a plain miss).
 *   <li><b>Thread safety.</b> Every method may be called from any thread concurrently.
 *   <li><b>Close.</b> After {@link #close()} every method but {@code close} and {@link #stats}
 *       throws {@link IllegalStateException}. {@code close} is idempotent.
 * </ul>
 */
public interface KvStore extends AutoCloseable {

  /** Whether {@code key} is visible. Does not count as an access for eviction. Non-blocking. */
  boolean contains(ChunkKey key);

  /**
   * Returns how many leading keys of {@code keys} are visible (stops at the first miss). Does not
   * count as an access. Non-blocking for memory tiers.
   */
  default int prefixLength(ChunkKey[] keys) {
    int n = 0;
    while (n < keys.length && contains(keys[n])) {
      n++;
    }
    return n;
  }

  /**
   * Stores {@code chunk}'s bytes ({@code chunk.length()} of them) under {@code key}. Never blocks
   * on I/O: asynchronous tiers queue the write (a full queue drops it, counted).
   *
   * @return true if stored or queued; false if the key was known to be present or the put was
   *     dropped. A tier that cannot know without a round trip (remote) returns true and makes the
   *     write a no-op on the server; either way an existing chunk is never overwritten.
   * @throws IllegalStateException if the store is closed
   */
  boolean put(ChunkKey key, ChunkBuffer chunk);

  /**
   * Returns {@code key}'s bytes in a buffer the caller owns (one reference) and must release, or
   * null on a miss. Counts as an access. May block on I/O in lower tiers.
   *
   * @throws IOException if reading failed in a way the caller should log (the chunk is a miss)
   * @throws IllegalStateException if the store is closed
   */
  ChunkBuffer get(ChunkKey key) throws IOException;

  /** Where a tier keeps its chunks, which decides how callers may ask it. */
  enum Medium {
    /** Host memory: every call is answered from memory. */
    MEMORY,
    /** Local files: {@code contains} is answered from an in-memory index; reads block on disk. */
    DISK,
    /**
     * Across a network: {@code contains} costs a round trip (ask with {@link #prefixLengthAsync}).
     */
    REMOTE
  }

  /** Where this tier keeps its chunks; {@link Medium#MEMORY} unless a tier says otherwise. */
  default Medium medium() {
    return Medium.MEMORY;
  }

  /**
   * Whether this tier is across a network: its {@link #contains} costs a round trip, so callers ask
   * it about many keys at once and only after local tiers missed.
   */
  default boolean isRemote() {
    return medium() == Medium.REMOTE;
  }

  /**
   * Like {@link #prefixLength} without waiting: the answer arrives on the returned future. Remote
   * tiers send the question and return at once; the future completes with the count when the reply
   * arrives, or with 0 when the request fails or times out (the failure counted, never an
   * exceptional completion). Tiers that answer from memory complete it before returning (this
   * default).
   *
   * @throws IllegalStateException if the store is closed
   */
  default CompletableFuture<Integer> prefixLengthAsync(ChunkKey[] keys) {
    return CompletableFuture.completedFuture(prefixLength(keys));
  }

  /**
   * Reads the stored ones among {@code keys} in the background and hands each chunk to {@code sink}
   * on a background thread, ahead of queued writes. The buffer is valid during the call; a sink
   * that keeps it retains it. A tier with nothing to gain from reading ahead ignores the call (this
   * default). Does not block.
   *
   * @return how many chunks were queued for reading
   * @throws IllegalStateException if the store is closed
   */
  default int prefetch(ChunkKey[] keys, BiConsumer<ChunkKey, ChunkBuffer> sink) {
    return 0;
  }

  /**
   * Hands {@code sink} the block prefixes ({@link ChunkBuffer#blockPrefixes()}) of the chunks this
   * tier found at start-up (the disk tier reads them from its files' headers), once: a restarted
   * engine learns which shorter prefixes its persisted chunks serve. Tiers that keep nothing across
   * restarts hand nothing (this default).
   */
  default void takeRecoveredPrefixes(BiConsumer<ChunkKey, long[]> sink) {}

  /**
   * Tells {@code listener} of every chunk this tier stores and removes from now on; a tier that
   * does not know when its chunks go (a remote store evicts on its own) ignores it (this default).
   */
  default void listen(TierListener listener) {}

  /**
   * Requests this tier gave up on because no answer came in time, so far (a remote store; 0 for
   * tiers that always answer). Cheap: a remote tier's circuit breaker asks it around every call.
   */
  default long timeouts() {
    return stats().errors().getOrDefault(ErrorKind.TIMEOUT, 0L);
  }

  /**
   * Removes every chunk this tier keeps on this machine (a cache reset); shared remote stores keep
   * theirs and return 0 (this default). Readers holding a buffer keep it until they release it.
   *
   * @return chunks removed
   */
  default int clearLocal() {
    return 0;
  }

  /**
   * Gets several chunks; tiers with parallel I/O override this to read them concurrently.
   *
   * @return one buffer per key (owned by the caller), null where missing or unreadable
   * @throws IllegalStateException if the store is closed
   */
  default ChunkBuffer[] getBatch(ChunkKey[] keys) {
    ChunkBuffer[] out = new ChunkBuffer[keys.length];
    for (int i = 0; i < keys.length; i++) {
      try {
        out[i] = get(keys[i]);
      } catch (IOException e) {
        out[i] = null; // a miss; the tier counted it
      }
    }
    return out;
  }

  /**
   * {@link #getBatch(ChunkKey[])}, handing each chunk to {@code arrived} with its index in {@code
   * keys} before this returns: tiers that read in parallel call it on the reading thread as soon as
   * that chunk is read, so the caller can use it while later chunks are still being read (this
   * default calls it for each chunk after the whole batch). The buffer stays owned by the result;
   * {@code arrived} must not release or keep it. An exception from {@code arrived} fails the batch
   * as an unexpected read failure would. A null {@code arrived} is {@link #getBatch(ChunkKey[])}.
   */
  default ChunkBuffer[] getBatch(ChunkKey[] keys, ObjIntConsumer<ChunkBuffer> arrived) {
    ChunkBuffer[] out = getBatch(keys);
    for (int i = 0; arrived != null && i < out.length; i++) {
      if (out[i] != null) {
        try {
          arrived.accept(out[i], i);
        } catch (RuntimeException e) {
          for (ChunkBuffer b : out) {
            if (b != null) {
              b.release();
            }
          }
          throw e;
        }
      }
    }
    return out;
  }

  /**
   * Pins {@code key} against eviction.
   *
   * @return false if the key is not stored (nothing pinned)
   */
  boolean pin(ChunkKey key);

  /** Drops one pin of {@code key}; a key that is absent or not pinned is ignored. */
  void unpin(ChunkKey key);

  /**
   * Removes {@code key}, pinned or not; readers holding its buffer keep it until they release.
   *
   * @return true if it was present
   */
  boolean remove(ChunkKey key);

  /** Counters since the store was opened. Never throws. */
  StoreStats stats();

  /**
   * Blocks until the background work this store has accepted is done: every queued or in-flight
   * write has been stored, dropped or failed, with its outcome visible to {@link #contains} and
   * counted in {@link #stats}, and the store holds no reference to a caller's buffer on its behalf.
   * Tiers that do all their work on the caller's thread have nothing to wait for and return true at
   * once (this default). For draining before a restart, benchmarks and tests; the step loop never
   * calls it.
   *
   * <p>It returns as soon as it sees no work pending, so work submitted by other threads while it
   * waits may or may not be waited for, and a steady stream of it may make the call time out. Does
   * not throw on a closed store: what {@link #close()} drained or dropped is no longer pending.
   *
   * @param timeoutMillis the most to wait, in milliseconds
   * @return true if idle, false if {@code timeoutMillis} passed first
   * @throws InterruptedException if interrupted while waiting
   */
  default boolean awaitIdle(long timeoutMillis) throws InterruptedException {
    return true;
  }

  /** Releases every chunk the store holds and stops background work. Idempotent. */
  @Override
  void close();
}
