package io.kvtier.disk;

import static io.kvtier.Checks.checkPositive;

import io.kvtier.key.ChunkKey;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * What the disk tier holds and which file goes first: key → file, sizes, pins, least-recently-used
 * order and the byte budget. Bookkeeping only: it never touches a file; the paths of entries it
 * evicts are handed back to the caller, which deletes them outside the lock.
 *
 * <p>Implementation note. Two maps hold the same entries:
 *
 * <pre>
 *   visible  ConcurrentHashMap   read without locking ({@link #contains}, {@link #unpin})
 *   order    LinkedHashMap       access order, eldest first; guarded by this object's monitor
 * </pre>
 *
 * The byte count covers every entry plus the reservations of writes in flight: a writer {@link
 * #reserve reserves} a file's bytes before writing it (evicting the eldest unpinned entries to make
 * room), then either {@link #commit commits} the entry after the file is in place or {@link #cancel
 * cancels} the reservation. So the files on disk never exceed the budget, even while written. An
 * entry is pinned by lookups ({@link #pin}) and by readers ({@link #acquire}); eviction skips
 * pinned entries.
 *
 * <p>Thread-safe. Every method is O(1) under the monitor except {@link #reserve} and {@link #load},
 * which are O(pinned entries skipped + entries evicted). Never blocks on I/O.
 */
final class DiskIndex {
  /** One file in the index. Immutable but for its pin count. */
  static final class Entry {
    final Path path;
    final long dataLength;
    final long fileBytes;

    /** Lookup pins and readers; changed under the index's monitor except by unpin and release. */
    final AtomicInteger pins = new AtomicInteger();

    Entry(Path path, long dataLength, long fileBytes) {
      this.path = path;
      this.dataLength = dataLength;
      this.fileBytes = fileBytes;
    }

    @Override
    public String toString() {
      return path + " (" + fileBytes + " bytes, " + pins.get() + " pins)";
    }
  }

  private long budgetBytes; // guarded by this; below the configured one while the disk is full
  private volatile java.util.function.Consumer<ChunkKey> onRemoved = key -> {};
  private final ConcurrentHashMap<ChunkKey, Entry> visible = new ConcurrentHashMap<>();

  // Guarded by this.
  private final LinkedHashMap<ChunkKey, Entry> order = new LinkedHashMap<>(1024, 0.75f, true);
  private long usedBytes; // entries plus reservations of writes in flight

  /** An empty index that keeps files within {@code budgetBytes}. */
  DiskIndex(long budgetBytes) {
    this.budgetBytes = checkPositive(budgetBytes, "budgetBytes");
  }

  /** Whether {@code key} is in the index. Lock-free; not an access. */
  boolean contains(ChunkKey key) {
    return visible.containsKey(key);
  }

  /**
   * The entry of {@code key}, marked most recently used and pinned for the caller, who must {@link
   * #release} it once done with the file.
   *
   * @return null if absent
   */
  synchronized Entry acquire(ChunkKey key) {
    Entry e = order.get(key); // also marks it recently used
    if (e != null) {
      e.pins.incrementAndGet();
    }
    return e;
  }

  /** Drops the pin taken by {@link #acquire}. Lock-free. */
  void release(Entry e) {
    e.pins.decrementAndGet();
  }

  /**
   * Pins {@code key} against eviction until {@link #unpin}. Not an access.
   *
   * @return false if absent
   */
  synchronized boolean pin(ChunkKey key) { // under the monitor: eviction checks pins under it too
    Entry e = visible.get(key);
    if (e == null) {
      return false;
    }
    e.pins.incrementAndGet();
    return true;
  }

  /** Drops one pin of {@code key}, if it is present and pinned. Lock-free. */
  void unpin(ChunkKey key) {
    Entry e = visible.get(key);
    if (e != null) {
      e.pins.updateAndGet(n -> n > 0 ? n - 1 : 0);
    }
  }

  /**
   * Reserves {@code bytes} for a file about to be written, evicting least recently used unpinned
   * entries as needed; their paths are added to {@code evicted}, for the caller to delete. If even
   * evicting every unpinned entry does not make room, nothing is reserved (the entries evicted on
   * the way stay evicted).
   *
   * @return true if reserved: the caller then calls {@link #commit} or {@link #cancel} exactly once
   */
  synchronized boolean reserve(long bytes, List<Path> evicted) {
    boolean fits = evictUntilFits(bytes, evicted);
    if (fits) {
      usedBytes += bytes;
    }
    return fits;
  }

  /** Gives back a reservation whose write failed. */
  synchronized void cancel(long bytes) {
    usedBytes -= bytes;
  }

  /**
   * Turns a reservation of {@code entry.fileBytes} into the entry of {@code key}, visible from now
   * on and most recently used. An entry already there for the key (its file was just replaced) is
   * dropped with its bytes.
   */
  synchronized void commit(ChunkKey key, Entry entry) {
    Entry previous = order.put(key, entry);
    if (previous != null) {
      usedBytes -= previous.fileBytes;
    }
    visible.put(key, entry);
  }

  /**
   * Adds files found at start-up, {@code found} oldest first, then evicts least recently used
   * unpinned entries until the budget holds; their paths are added to {@code evicted}.
   */
  synchronized void load(Map<ChunkKey, Entry> found, List<Path> evicted) {
    found.forEach(this::commitLoaded);
    evictUntilFits(0, evicted);
  }

  private void commitLoaded(ChunkKey key, Entry entry) { // guarded by this
    usedBytes += entry.fileBytes;
    commit(key, entry);
  }

  /**
   * Removes {@code key} if it is still mapped to {@code expected} (a reader that found its file
   * broken drops exactly the entry it read, not one written since).
   *
   * @return whether it was removed
   */
  synchronized boolean remove(ChunkKey key, Entry expected) {
    if (!order.remove(key, expected)) {
      return false;
    }
    visible.remove(key, expected);
    usedBytes -= expected.fileBytes;
    onRemoved.accept(key);
    return true;
  }

  /** Calls {@code listener} with each key that leaves the index (evicted or removed). */
  void onRemoved(java.util.function.Consumer<ChunkKey> listener) {
    this.onRemoved = listener;
  }

  /**
   * Removes {@code key} whatever its pins (a reader that already opened the file finishes from it).
   *
   * @return the removed entry, or null if absent
   */
  synchronized Entry remove(ChunkKey key) {
    Entry e = order.remove(key);
    if (e != null) {
      visible.remove(key, e);
      usedBytes -= e.fileBytes;
      onRemoved.accept(key);
    }
    return e;
  }

  /**
   * Sets the budget to {@code bytes} (what the file system can hold now) and evicts least recently
   * used unpinned entries until it holds; their paths are added to {@code evicted}.
   */
  synchronized void setBudget(long bytes, List<Path> evicted) {
    budgetBytes = Math.max(0, bytes);
    evictUntilFits(0, evicted);
  }

  /**
   * Removes every entry whose file is under {@code dir} (its directory vanished), whatever its
   * pins.
   *
   * @return entries removed
   */
  synchronized int removeUnder(Path dir) {
    int removed = 0;
    Iterator<Map.Entry<ChunkKey, Entry>> it = order.entrySet().iterator();
    while (it.hasNext()) {
      Map.Entry<ChunkKey, Entry> next = it.next();
      Entry e = next.getValue();
      if (e.path.startsWith(dir)) {
        it.remove();
        visible.remove(next.getKey(), e);
        usedBytes -= e.fileBytes;
        onRemoved.accept(next.getKey());
        removed++;
      }
    }
    return removed;
  }

  /** A snapshot of the keys, least recently used first. */
  synchronized List<ChunkKey> keys() {
    return new ArrayList<>(order.keySet());
  }

  /** Entries held. */
  synchronized long size() {
    return order.size();
  }

  /** Bytes of the entries' files plus reservations of writes in flight. */
  synchronized long usedBytes() {
    return usedBytes;
  }

  /** The budget in bytes. */
  synchronized long budgetBytes() {
    return budgetBytes;
  }

  /** Evicts eldest unpinned entries until {@code bytes} more fit. Guarded by this. */
  private boolean evictUntilFits(long bytes, List<Path> evicted) {
    Iterator<Map.Entry<ChunkKey, Entry>> it = order.entrySet().iterator();
    while (usedBytes + bytes > budgetBytes && it.hasNext()) {
      Map.Entry<ChunkKey, Entry> next = it.next();
      Entry e = next.getValue();
      if (e.pins.get() == 0) {
        it.remove();
        visible.remove(next.getKey(), e);
        usedBytes -= e.fileBytes;
        evicted.add(e.path);
        onRemoved.accept(next.getKey());
      }
    }
    return usedBytes + bytes <= budgetBytes;
  }
}
