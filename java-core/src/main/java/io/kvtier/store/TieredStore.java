package io.kvtier.store;

import static io.kvtier.Checks.checkPositive;

import io.kvtier.DaemonThreads;
import io.kvtier.config.Redaction;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import java.io.IOException;
import java.util.List;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.ObjIntConsumer;

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
 * <p>Thread-safe. Owns its tiers, not the pool of the CPU tier: {@link #close()} stops intake,
 * waits (bounded) for the work already under way that holds chunks or may add them to the CPU tier
 * (puts, copies down, lower-tier reads and their promotions), drops and releases what is still
 * queued, then closes every tier. Once it returns, the only chunk references it leaves are those of
 * copies stuck in a lower tier past the wait, released when those writes return; so the owner may
 * close the pool right after, and the pool unmaps as soon as its last slot comes back.
 *
 * <p>Implementation note. A {@link CloseGate} counts the operations under way: each put, get,
 * batched get and promotion from a prefetch enters it and leaves it when done, and each copy-down
 * holds an entry of its own from the put that schedules it until it has run (or was dropped and has
 * released its chunk). Close shuts the gate and waits for it to empty, so the CPU tier is emptied
 * only when nothing can add to it any more.
 */
public final class TieredStore implements KvStore {
  /**
   * How long close waits for work under way before it drops queued copy-downs and interrupts
   * running ones, and again for the interrupted ones to return, in milliseconds.
   */
  public static final long CLOSE_WAIT_MILLIS = 10_000;

  private static final System.Logger LOG = System.getLogger(TieredStore.class.getName());

  private final CpuStore cpu;
  private final boolean cacheInCpu;
  private final List<KvStore> lower;
  private final ThreadPoolExecutor copyDown;
  private final LongAdder copyDownDropped = new LongAdder();
  private final LongAdder copyDownFailed = new LongAdder();
  private final LongAdder promotions = new LongAdder();
  private final long closeWaitNanos;
  private final CloseGate gate = new CloseGate();
  private final InFlight copyDowns = new InFlight(); // queued or running, for awaitIdle

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
    this(cpu, lower, copyDownThreads, copyDownQueue, cacheInCpu, CLOSE_WAIT_MILLIS);
  }

  /**
   * Like {@link #TieredStore(CpuStore, List, int, int, boolean)}, with the time {@link #close()}
   * waits for work under way instead of {@link #CLOSE_WAIT_MILLIS}.
   *
   * @param closeWaitMillis how long close waits for work under way, and again for interrupted
   *     copies, in milliseconds
   * @throws IllegalArgumentException if a count or {@code closeWaitMillis} is not positive, or
   *     {@code cacheInCpu} is false without a lower tier
   */
  public TieredStore(
      CpuStore cpu,
      List<KvStore> lower,
      int copyDownThreads,
      int copyDownQueue,
      boolean cacheInCpu,
      long closeWaitMillis) {
    this.closeWaitNanos =
        TimeUnit.MILLISECONDS.toNanos(checkPositive(closeWaitMillis, "closeWaitMillis"));
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

  /** Copies to lower tiers dropped because the queue was full or the store closed first. */
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

  /** Whether {@link #close()} has begun. */
  public boolean isClosed() {
    return gate.isClosed();
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

  /**
   * Like {@link #remotePrefix} without waiting: each remote tier is asked at once and the future
   * completes with the longest prefix one of them holds when all have answered (0 without remote
   * tiers, or from a tier that failed or timed out). Never completes exceptionally. Does not block.
   */
  public CompletableFuture<Integer> remotePrefixAsync(ChunkKey[] keys) {
    checkOpen();
    CompletableFuture<Integer> best = CompletableFuture.completedFuture(0);
    for (KvStore s : lower) {
      if (s.isRemote()) {
        best = best.thenCombine(s.prefixLengthAsync(keys), Math::max);
      }
    }
    return best;
  }

  /** The longest prefix of {@code keys} one remote tier holds (0 without remote tiers). Blocks. */
  public int remotePrefix(ChunkKey[] keys) {
    int best = 0;
    for (KvStore s : lower) {
      if (s.isRemote()) {
        best = Math.max(best, s.prefixLength(keys));
      }
    }
    return best;
  }

  /**
   * Stores {@code chunk} in the CPU tier at once and queues its copy to the lower tiers; a full
   * queue drops the copy (counted). Does not block on I/O.
   *
   * @throws IllegalStateException if the store is closed
   */
  @Override
  public boolean put(ChunkKey key, ChunkBuffer chunk) {
    enter();
    try {
      boolean stored = cpu.put(key, chunk);
      if (!lower.isEmpty()) {
        scheduleCopyDown(key, chunk);
      }
      return stored;
    } finally {
      gate.exit();
    }
  }

  /** Queues a copy of {@code chunk} to the lower tiers; called inside the gate. */
  private void scheduleCopyDown(ChunkKey key, ChunkBuffer chunk) {
    if (!gate.tryEnter()) { // closing began after this put entered
      copyDownDropped.increment();
      return;
    }
    copyDowns.increment();
    CopyDown task = new CopyDown(key, chunk.retain());
    try {
      copyDown.execute(task);
    } catch (RejectedExecutionException e) {
      task.drop();
    }
  }

  /**
   * One chunk's copy to every lower tier. Holds a reference to the chunk and an entry in the gate
   * from when it is queued until {@link #run()} ends or {@link #drop()} is called, exactly one of
   * the two.
   */
  private final class CopyDown implements Runnable {
    private final ChunkKey key;
    private final ChunkBuffer chunk;

    CopyDown(ChunkKey key, ChunkBuffer chunk) {
      this.key = key;
      this.chunk = chunk;
    }

    @Override
    public void run() {
      try {
        for (KvStore s : lower) {
          try {
            s.put(key, chunk);
          } catch (RuntimeException e) {
            copyDownFailed.increment();
            LOG.log(
                System.Logger.Level.WARNING,
                "copy of " + key + " down to " + s + " failed",
                Redaction.throwable(e));
          }
        }
      } finally {
        chunk.release();
        if (!cacheInCpu && !gate.isClosed()) {
          cpu.remove(key); // staged only; asynchronous lower tiers hold their own reference
        }
        copyDowns.decrement();
        gate.exit();
      }
    }

    /** Gives up a copy that never ran: releases the chunk and counts the drop. */
    void drop() {
      chunk.release();
      copyDownDropped.increment();
      copyDowns.decrement();
      gate.exit();
    }
  }

  @Override
  public ChunkBuffer get(ChunkKey key) throws IOException {
    enter();
    try {
      return getInGate(key);
    } finally {
      gate.exit();
    }
  }

  private ChunkBuffer getInGate(ChunkKey key) throws IOException {
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
   * tier with one batched (parallel where the tier can) read, promoting what is found. A chunk a
   * tier said it held but could not deliver (its file turned out corrupt or missing) is looked for
   * in the tiers below it, with the chunks after it.
   *
   * @return buffers (owned by the caller) for the contiguous stored prefix of {@code keys}
   * @throws IllegalStateException if the store is closed
   */
  public ChunkBuffer[] getPrefix(ChunkKey[] keys) {
    return getPrefix(keys, null);
  }

  /**
   * {@link #getPrefix(ChunkKey[])}, handing each chunk a lower tier reads to {@code arrived} (with
   * its index in {@code keys}) as soon as it is read ({@link KvStore#getBatch(ChunkKey[],
   * ObjIntConsumer)}): chunks past the prefix's first miss may be handed over too. Chunks found in
   * the CPU tier are not handed over. A null {@code arrived} hands over nothing.
   */
  public ChunkBuffer[] getPrefix(ChunkKey[] keys, ObjIntConsumer<ChunkBuffer> arrived) {
    enter();
    try {
      return getPrefixInGate(keys, arrived);
    } finally {
      gate.exit();
    }
  }

  private ChunkBuffer[] getPrefixInGate(ChunkKey[] keys, ObjIntConsumer<ChunkBuffer> arrived) {
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
      int offset = n;
      ChunkBuffer[] batch =
          s.getBatch(
              java.util.Arrays.copyOfRange(keys, n, stored),
              arrived == null ? null : (b, i) -> arrived.accept(b, offset + i));
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
      n += i; // a chunk this tier could not deliver (a corrupt file) is asked of the next one
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
      if (s.medium() == Medium.DISK) {
        List<ChunkKey> wanted = new java.util.ArrayList<>();
        for (ChunkKey k : keys) {
          if (!cpu.contains(k) && s.contains(k)) {
            wanted.add(k);
          }
        }
        s.prefetch(
            wanted.toArray(new ChunkKey[0]),
            (k, b) -> {
              if (!gate.tryEnter()) {
                return; // closing: the chunk stays on disk
              }
              try {
                if (cpu.put(k, b)) {
                  promotions.increment();
                }
              } finally {
                gate.exit();
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
    if (gate.isClosed()) {
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

  /**
   * Empties the tiers of this process, the CPU tier and the disk tier (a cache reset): remote
   * stores, shared with other instances, keep their chunks.
   *
   * @return chunks removed
   */
  public int clearLocal() {
    int removed = cpu.clearLocal();
    for (KvStore tier : lower) {
      removed += tier.clearLocal();
    }
    return removed;
  }

  /** Listens to the CPU tier and every lower tier that can tell (not a remote store). */
  @Override
  public void listen(TierListener listener) {
    cpu.listen(listener);
    for (KvStore tier : lower) {
      tier.listen(listener);
    }
  }

  /** The lower tiers' recovered block prefixes ({@link KvStore#takeRecoveredPrefixes}). */
  @Override
  public void takeRecoveredPrefixes(java.util.function.BiConsumer<ChunkKey, long[]> sink) {
    for (KvStore tier : lower) {
      tier.takeRecoveredPrefixes(sink);
    }
  }

  /** Lower tiers, fastest first. */
  public List<KvStore> lowerTiers() {
    return lower;
  }

  /**
   * Stops intake, waits up to the close wait for puts, copies down, reads and promotions under way;
   * then drops (releasing their chunks) the copies still queued, interrupts those still running and
   * waits up to the close wait again for them; then empties the CPU tier and closes every tier.
   * Copies that outlast both waits keep their chunk until their lower-tier write returns (logged).
   * Blocks for at most twice the close wait; idempotent. If interrupted, stops waiting (the flag is
   * kept) and goes on closing.
   */
  @Override
  public void close() {
    if (!gate.close()) {
      return;
    }
    try {
      if (!gate.awaitIdle(closeWaitNanos)) {
        dropQueuedCopies();
        if (!gate.awaitIdle(closeWaitNanos)) {
          logStillRunning();
        }
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      dropQueuedCopies();
      logStillRunning();
    }
    copyDown.shutdown(); // no-op after shutdownNow; otherwise its idle workers exit
    cpu.close();
    for (KvStore s : lower) {
      s.close();
    }
  }

  /** Drops and releases the queued copies and interrupts the running ones. */
  private void dropQueuedCopies() {
    List<Runnable> queued = copyDown.shutdownNow();
    queued.forEach(r -> ((CopyDown) r).drop());
    if (!queued.isEmpty()) {
      LOG.log(
          System.Logger.Level.WARNING,
          "closing: " + queued.size() + " queued copy-downs to lower tiers dropped");
    }
  }

  private void logStillRunning() {
    int inside = gate.inside();
    if (inside > 0) {
      LOG.log(
          System.Logger.Level.WARNING,
          "closing: "
              + inside
              + " operations still running in a lower tier after the close wait; their chunks"
              + " are released when they return");
    }
  }

  /** Enters the gate, or throws if the store is closed; the caller exits in a finally block. */
  private void enter() {
    if (!gate.tryEnter()) {
      throw new IllegalStateException("TieredStore is closed");
    }
  }

  private void checkOpen() {
    if (gate.isClosed()) {
      throw new IllegalStateException("TieredStore is closed");
    }
  }
}
