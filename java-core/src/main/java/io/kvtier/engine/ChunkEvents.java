package io.kvtier.engine;

import io.kvtier.key.ChunkKey;
import io.kvtier.store.KvStore;
import io.kvtier.store.TierListener;
import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.Map;

/**
 * kvtier's KV events: which chunks each local tier starts and stops holding, for vLLM's KV event
 * publisher (a KV-aware router). The worker gives each chunk it saves a tag, opaque here (vLLM's
 * block hashes and the chunk's tokens, packed by the Python side); every time a tier stores or
 * removes a tagged chunk, an event with the tag is queued until {@link #drain}.
 *
 * <p>Each chunk announces a tier once while it holds it: a second store into the same tier (a
 * rewritten file) is not announced again, and a removal only follows a store. A chunk that no tier
 * holds keeps its tag a while longer ({@link #maxUnheldTags} of them, oldest dropped first), so a
 * copy to disk that lands after the CPU tier evicted the chunk is still announced; untagged chunks
 * (files found at start, chunks saved before events were on) are not announced at all. At most
 * {@link #maxQueued} events wait; more are dropped and counted ({@link #dropped}), so a worker that
 * stops draining costs bounded memory.
 *
 * <p>Thread-safe: tiers call in from transfer and I/O threads, the worker drains on its own.
 */
public final class ChunkEvents implements TierListener {
  /** Event kinds in {@link #drain}'s output. */
  public static final int STORED = 1;

  public static final int REMOVED = 2;

  private final int maxQueued;
  private final int maxUnheldTags;

  // Guarded by this.
  private final Map<ChunkKey, Tagged> tagged = new HashMap<>();
  private final LinkedHashSet<ChunkKey> unheld = new LinkedHashSet<>();
  private final ArrayDeque<long[]> queue = new ArrayDeque<>();
  private long queuedLongs;
  private long dropped;

  private static final class Tagged {
    final long[] tag;
    int tiers; // bit per KvStore.Medium holding the chunk

    Tagged(long[] tag) {
      this.tag = tag;
    }
  }

  /**
   * @param maxQueued events waiting at most
   * @param maxUnheldTags tags kept for chunks no tier holds (saves under way, recent evictions)
   */
  public ChunkEvents(int maxQueued, int maxUnheldTags) {
    this.maxQueued = io.kvtier.Checks.checkPositive(maxQueued, "maxQueued");
    this.maxUnheldTags = io.kvtier.Checks.checkPositive(maxUnheldTags, "maxUnheldTags");
  }

  /** Gives {@code key} its tag before it is stored (a key tagged already keeps its first tag). */
  public synchronized void tag(ChunkKey key, long[] tag) {
    if (tagged.putIfAbsent(key, new Tagged(tag)) == null) {
      unheldNow(key);
    }
  }

  @Override
  public synchronized void stored(ChunkKey key, KvStore.Medium medium) {
    Tagged t = tagged.get(key);
    int bit = 1 << medium.ordinal();
    if (t == null || (t.tiers & bit) != 0) {
      return;
    }
    if (t.tiers == 0) {
      unheld.remove(key);
    }
    t.tiers |= bit;
    enqueue(STORED, medium, t.tag);
  }

  @Override
  public synchronized void removed(ChunkKey key, KvStore.Medium medium) {
    Tagged t = tagged.get(key);
    int bit = 1 << medium.ordinal();
    if (t == null || (t.tiers & bit) == 0) {
      return;
    }
    t.tiers &= ~bit;
    enqueue(REMOVED, medium, t.tag);
    if (t.tiers == 0) {
      unheldNow(key);
    }
  }

  private void unheldNow(ChunkKey key) { // guarded by this
    unheld.add(key);
    if (unheld.size() > maxUnheldTags) {
      Iterator<ChunkKey> it = unheld.iterator();
      ChunkKey eldest = it.next();
      it.remove();
      tagged.remove(eldest);
    }
  }

  private void enqueue(int kind, KvStore.Medium medium, long[] tag) { // guarded by this
    if (queue.size() >= maxQueued) {
      dropped++;
      return;
    }
    long[] event = new long[tag.length + 1];
    event[0] = ((long) kind << 32) | ((long) medium.ordinal() << 16) | tag.length;
    System.arraycopy(tag, 0, event, 1, tag.length);
    queue.add(event);
    queuedLongs += event.length;
  }

  /**
   * Takes every queued event, oldest first, packed into one array: per event a word {@code kind <<
   * 32 | medium ordinal << 16 | tag length}, then the tag.
   */
  public synchronized long[] drain() {
    long[] out = new long[Math.toIntExact(queuedLongs)];
    int at = 0;
    for (long[] e : queue) {
      System.arraycopy(e, 0, out, at, e.length);
      at += e.length;
    }
    queue.clear();
    queuedLongs = 0;
    return out;
  }

  /** Events dropped because {@link #maxQueued} were waiting. */
  public synchronized long dropped() {
    return dropped;
  }

  /** Chunks with a tag now (held by a tier, or recently). */
  public synchronized int tagged() {
    return tagged.size();
  }
}
