package io.kvtier.store;

import static io.kvtier.Checks.checkPositive;

import io.kvtier.DaemonThreads;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import java.io.IOException;
import java.util.List;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.LongAdder;

/**
 * The CPU tier in front of slower tiers (disk, remote).
 *
 * <ul>
 *   <li>{@link #put}: into the CPU tier at once; then a bounded pool of background workers ({@code
 *       kvtier-copy-down-N}) copies the chunk to every lower tier. A full queue drops the copy and
 *       counts it; the caller never waits.
 *   <li>{@link #get}: the CPU tier first, then each lower tier in order; a lower-tier hit is
 *       promoted into the CPU tier.
 *   <li>{@link #contains}, {@link #prefixLength}: a key is stored if any tier has it.
 * </ul>
 *
 * <p>Thread-safe. Owns its tiers: {@link #close()} stops the workers (waiting up to {@link
 * #CLOSE_WAIT_MILLIS} for queued copies) and closes every tier.
 */
public final class TieredStore implements KvStore {
  /** How long close waits for queued copy-downs before dropping them, in milliseconds. */
  public static final long CLOSE_WAIT_MILLIS = 10_000;

  private static final System.Logger LOG = System.getLogger(TieredStore.class.getName());

  private final CpuStore cpu;
  private final boolean cacheInCpu;
  private final List<KvStore> lower;
  private final ThreadPoolExecutor copyDown;
  private final LongAdder copyDownDropped = new LongAdder();
  private final LongAdder copyDownFailed = new LongAdder();
  private final LongAdder promotions = new LongAdder();
  private final InFlight copyDowns = new InFlight(); // queued or running on copyDown
  private volatile boolean closed;

  /**
   * Composes {@code cpu} with {@code lower} tiers (fastest first).
   *
   * @param copyDownThreads background workers copying chunks down
   * @param copyDownQueue copies that may wait before new ones are dropped
   * @throws IllegalArgumentException if a count is not positive
   */
  public TieredStore(CpuStore cpu, List<KvStore> lower, int copyDownThreads, int copyDownQueue) {
    this(cpu, lower, copyDownThreads, copyDownQueue, true);
  }

  /**
   * Like {@link #TieredStore(CpuStore, List, int, int)}; with {@code cacheInCpu} false the CPU tier
   * only stages chunks (LMCache's {@code local_cpu: false}): a chunk leaves it once copied down,
   * and lower-tier hits are not promoted.
   *
   * @throws IllegalArgumentException if {@code cacheInCpu} is false without a lower tier
   */
  public TieredStore(
      CpuStore cpu,
      List<KvStore> lower,
      int copyDownThreads,
      int copyDownQueue,
      boolean cacheInCpu) {
    if (!cacheInCpu && lower.isEmpty()) {
      throw new IllegalArgumentException("a CPU tier that only stages needs a lower tier");
    }
    this.cacheInCpu = cacheInCpu;
    this.cpu = cpu;
    this.lower = List.copyOf(lower);
    checkPositive(copyDownThreads, "copyDownThreads");
    checkPositive(copyDownQueue, "copyDownQueue");
    this.copyDown =
        new ThreadPoolExecutor(
            copyDownThreads,
            copyDownThreads,
            30,
            TimeUnit.SECONDS,
            new ArrayBlockingQueue<>(copyDownQueue),
            DaemonThreads.numbered("kvtier-copy-down-"),
            new ThreadPoolExecutor.AbortPolicy());
    this.copyDown.allowCoreThreadTimeOut(true);
  }

  /** The CPU tier. */
  public CpuStore cpu() {
    return cpu;
  }

  /** Copies to lower tiers dropped because the queue was full (or the store closing). */
  public long copyDownDropped() {
    return copyDownDropped.sum();
  }

  /** Copies to lower tiers that failed inside a tier. */
  public long copyDownFailed() {
    return copyDownFailed.sum();
  }

  /** Lower-tier hits copied up into the CPU tier. */
  public long promotions() {
    return promotions.sum();
  }

  @Override
  public boolean contains(ChunkKey key) {
    return containsLocally(key) || remotePrefix(new ChunkKey[] {key}) == 1;
  }

  /** Whether the CPU tier or a local lower tier holds {@code key} (no network round trip). */
  public boolean containsLocally(ChunkKey key) {
    checkOpen();
    if (cpu.contains(key)) {
      return true;
    }
    for (KvStore s : lower) {
      if (!s.isRemote() && s.contains(key)) {
        return true;
      }
    }
    return false;
  }

  /** Pins {@code key} in the CPU tier and local lower tiers; false if none of them holds it. */
  public boolean pinLocally(ChunkKey key) {
    return pinLocallyWhere(key) != LocalPin.NONE;
  }

  /** Where {@link #pinLocallyWhere} found a chunk. */
  public enum LocalPin {
    /** In no local tier; nothing pinned. */
    NONE,
    /** In the CPU tier (and maybe below): loads need no I/O. */
    MEMORY,
    /** Only in a lower local tier (disk): loading it reads a file. */
    LOWER
  }

  /** Like {@link #pinLocally}, telling whether the chunk is in memory or only on a lower tier. */
  public LocalPin pinLocallyWhere(ChunkKey key) {
    checkOpen();
    boolean memory = cpu.pin(key);
    boolean lowerTier = false;
    for (KvStore s : lower) {
      if (!s.isRemote()) {
        lowerTier |= s.pin(key);
      }
    }
    return memory ? LocalPin.MEMORY : lowerTier ? LocalPin.LOWER : LocalPin.NONE;
  }

  /** Whether a lower tier is remote. */
  public boolean hasRemote() {
    return lower.stream().anyMatch(KvStore::isRemote);
  }

  /**
   * Leading keys stored in any tier: local tiers key by key; at a local miss, each remote tier is
   * asked about all remaining keys in one pipelined round trip.
   */
  @Override
  public int prefixLength(ChunkKey[] keys) {
    checkOpen();
    int n = 0;
    while (n < keys.length) {
      if (containsLocally(keys[n])) {
        n++;
        continue;
      }
      int remote = remotePrefix(java.util.Arrays.copyOfRange(keys, n, keys.length));
      if (remote == 0) {
        break;
      }
      n += remote;
    }
    return n;
  }

  /** The longest prefix of {@code keys} one remote tier holds (0 without remote tiers). */
  public int remotePrefix(ChunkKey[] keys) {
    int best = 0;
    for (KvStore s : lower) {
      if (s.isRemote()) {
        best = Math.max(best, s.prefixLength(keys));
      }
    }
    return best;
  }

  @Override
  public boolean put(ChunkKey key, ChunkBuffer chunk) {
    checkOpen();
    boolean stored = cpu.put(key, chunk);
    if (lower.isEmpty()) {
      return stored;
    }
    chunk.retain(); // held by the copy-down task
    copyDowns.increment();
    try {
      copyDown.execute(() -> copyDown(key, chunk));
    } catch (RejectedExecutionException e) {
      chunk.release();
      copyDownDropped.increment();
      copyDowns.decrement();
    }
    return stored;
  }

  private void copyDown(ChunkKey key, ChunkBuffer chunk) {
    try {
      copyDownToEachTier(key, chunk);
    } finally {
      copyDowns.decrement();
    }
  }

  private void copyDownToEachTier(ChunkKey key, ChunkBuffer chunk) {
    try {
      for (KvStore s : lower) {
        try {
          s.put(key, chunk);
        } catch (RuntimeException e) {
          copyDownFailed.increment();
          LOG.log(System.Logger.Level.WARNING, "copy of " + key + " down to " + s + " failed", e);
        }
      }
    } finally {
      chunk.release();
      if (!cacheInCpu && !closed) {
        cpu.remove(key); // staged only; asynchronous lower tiers hold their own reference
      }
    }
  }

  @Override
  public ChunkBuffer get(ChunkKey key) throws IOException {
    checkOpen();
    ChunkBuffer b = cpu.get(key);
    if (b != null) {
      return b;
    }
    IOException first = null;
    for (KvStore s : lower) {
      try {
        b = s.get(key);
      } catch (IOException e) {
        if (first == null) {
          first = e;
        } else {
          first.addSuppressed(e);
        }
        continue;
      }
      if (b != null) {
        if (cacheInCpu && cpu.put(key, b)) {
          promotions.increment();
        }
        return b;
      }
    }
    if (first != null) {
      throw first;
    }
    return null;
  }

  /**
   * Gets the stored leading chunks of {@code keys}: CPU hits first, then the rest from each lower
   * tier with one batched (parallel where the tier can) read, promoting what is found.
   *
   * @return buffers (owned by the caller) for the contiguous stored prefix of {@code keys}
   */
  public ChunkBuffer[] getPrefix(ChunkKey[] keys) {
    checkOpen();
    List<ChunkBuffer> got = new java.util.ArrayList<>();
    int n = 0;
    while (n < keys.length) {
      ChunkBuffer b = cpu.get(keys[n]);
      if (b == null) {
        break;
      }
      got.add(b);
      n++;
    }
    for (KvStore s : lower) {
      if (n == keys.length) {
        break;
      }
      int stored = n;
      while (stored < keys.length && s.contains(keys[stored])) {
        stored++;
      }
      if (stored == n) {
        continue;
      }
      ChunkBuffer[] batch = s.getBatch(java.util.Arrays.copyOfRange(keys, n, stored));
      int i = 0;
      for (; i < batch.length && batch[i] != null; i++) {
        if (cacheInCpu && cpu.put(keys[n + i], batch[i])) {
          promotions.increment();
        }
        got.add(batch[i]);
      }
      for (int j = i; j < batch.length; j++) {
        if (batch[j] != null) {
          batch[j].release(); // past the first miss: not part of the prefix
        }
      }
      n += i;
      if (i < batch.length) {
        break;
      }
    }
    return got.toArray(new ChunkBuffer[0]);
  }

  /**
   * Starts copying the chunks of {@code keys} that only a disk tier holds up into the CPU tier, in
   * the background and ahead of queued disk writes. Does not block.
   *
   * @return how many chunks were queued
   */
  public int prefetch(ChunkKey[] keys) {
    checkOpen();
    if (!cacheInCpu) {
      return 0;
    }
    int queued = 0;
    for (KvStore s : lower) {
      if (s instanceof io.kvtier.disk.DiskStore disk) {
        List<ChunkKey> wanted = new java.util.ArrayList<>();
        for (ChunkKey k : keys) {
          if (!cpu.contains(k) && disk.contains(k)) {
            wanted.add(k);
          }
        }
        disk.prefetch(
            wanted.toArray(new ChunkKey[0]),
            (k, b) -> {
              if (!closed && cpu.put(k, b)) {
                promotions.increment();
              }
            });
        queued += wanted.size();
      }
    }
    return queued;
  }

  @Override
  public boolean pin(ChunkKey key) {
    boolean any = pinLocally(key);
    for (KvStore s : lower) {
      if (s.isRemote()) {
        any |= s.pin(key);
      }
    }
    return any;
  }

  @Override
  public void unpin(ChunkKey key) {
    checkOpen();
    cpu.unpin(key);
    for (KvStore s : lower) {
      s.unpin(key);
    }
  }

  @Override
  public boolean remove(ChunkKey key) {
    checkOpen();
    boolean any = cpu.remove(key);
    for (KvStore s : lower) {
      any |= s.remove(key);
    }
    return any;
  }

  /** The CPU tier's counters (lower tiers report their own). */
  @Override
  public StoreStats stats() {
    return cpu.stats();
  }

  /**
   * Waits for the copy-downs queued or running, then for each lower tier's own background work
   * ({@link KvStore#awaitIdle}), all within {@code timeoutMillis}: afterwards every chunk put
   * before the call is in every lower tier that accepted it, or was dropped and counted. Prefetches
   * in flight ({@link #prefetch}) are done too, as they run on the disk tier's workers.
   */
  @Override
  public boolean awaitIdle(long timeoutMillis) throws InterruptedException {
    if (closed) {
      return true;
    }
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
    if (!copyDowns.awaitZero(timeoutMillis)) {
      return false;
    }
    for (KvStore s : lower) {
      long leftMillis = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
      if (!s.awaitIdle(Math.max(0, leftMillis))) {
        return false;
      }
    }
    return true;
  }

  /** Lower tiers, fastest first. */
  public List<KvStore> lowerTiers() {
    return lower;
  }

  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    copyDown.shutdown();
    try {
      if (!copyDown.awaitTermination(CLOSE_WAIT_MILLIS, TimeUnit.MILLISECONDS)) {
        List<Runnable> dropped = copyDown.shutdownNow();
        copyDownDropped.add(dropped.size());
        LOG.log(
            System.Logger.Level.WARNING,
            "closing: " + dropped.size() + " copy-downs to lower tiers dropped");
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      copyDown.shutdownNow();
    }
    cpu.close();
    for (KvStore s : lower) {
      s.close();
    }
  }

  private void checkOpen() {
    if (closed) {
      throw new IllegalStateException("TieredStore is closed");
    }
  }
}
