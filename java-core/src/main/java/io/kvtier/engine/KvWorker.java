package io.kvtier.engine;

import static io.kvtier.Checks.checkNonNegative;
import static io.kvtier.Checks.checkPositive;

import io.kvtier.DaemonThreads;
import io.kvtier.key.KeyExtras;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.store.ErrorKind;
import io.kvtier.store.ErrorTally;
import io.kvtier.transfer.KvCacheTransfer;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import java.util.concurrent.FutureTask;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.IntSupplier;

/**
 * The worker side of the vLLM connector: saves a request's tokens from the paged KV cache into the
 * engine's chunks and loads stored chunks back into the request's blocks, whole or layer by layer,
 * on the caller's thread or in the background.
 *
 * <p>A request is given as its prompt tokens and its block table ({@code blockIds}, vLLM's block
 * ids in order); prompt token {@code t} is in block {@code blockIds[t / blockSize]}. Saves store
 * the chunks {@code [fromChunk, chunks of tokenCount)} that no local tier has yet; loads copy
 * prompt tokens {@code [from, to)} out of the chunks of the stored prefix {@code tokens[0,
 * storedTokens)}.
 *
 * <p>Nothing here fails a request: a save that goes wrong is discarded (nothing becomes visible), a
 * load that goes wrong reports how far it got so the caller recomputes the rest; both are counted
 * and the first of each kind is logged. Bad arguments (a block table too short for the tokens, a
 * block id outside the cache) are such failures too, since they come from the running engine.
 *
 * <p>Copies may be asynchronous ({@link KvCacheTransfer}): {@link #endSave} and {@link #endLoad}
 * wait for the calling thread's copies before chunks become visible or are released, so a save's or
 * load's layers must be copied on the thread that ends it.
 *
 * <p>Background operations ({@link #submitSave}, {@link #submitLoad}) run on {@code
 * kvtier-transfer-N} threads; their results are collected with {@link #drainCompleted}.
 * Thread-safe.
 */
public final class KvWorker implements AutoCloseable {
  private static final System.Logger LOG = System.getLogger(KvWorker.class.getName());

  private final KvEngine engine;
  private final KvCacheTransfer cache;
  private final int chunkTokens;
  private final long bytesPerToken;
  private final ExecutorService transfers;

  /** vLLM's null block: a placeholder in a block table, never a request's memory. */
  static final int NULL_BLOCK = 0;

  /**
   * The model's KV cache groups ({@link #KvWorker(KvEngine, KvCacheTransfer, int, CacheGroups)}).
   */
  private final CacheGroups groups;

  private final ErrorTally errors = new ErrorTally(LOG, "kvtier worker");
  private final AtomicLong nextId = new AtomicLong(1);
  private final Map<Long, SaveOp> saves = new ConcurrentHashMap<>();
  private final Map<Long, LoadOp> loads = new ConcurrentHashMap<>();
  private final Map<Long, Future<Integer>> inFlight = new ConcurrentHashMap<>();
  private final ConcurrentLinkedQueue<long[]> completed = new ConcurrentLinkedQueue<>();
  private final LongAdder savedChunks = new LongAdder();
  private final LongAdder loadedTokens = new LongAdder();
  private final LongAdder failedSaves = new LongAdder();
  private final LongAdder failedLoads = new LongAdder();
  private final LongAdder rejectedTransfers = new LongAdder();
  private final LongAdder savedBytes = new LongAdder();
  private final Latencies saveTimes = new Latencies(LATENCY_SAMPLES);
  private final Latencies loadTimes = new Latencies(LATENCY_SAMPLES);

  /** Save and load durations kept between two {@link #drainLatencies} calls, of each. */
  static final int LATENCY_SAMPLES = 4096;

  /** Background transfers waiting at most per worker; more are refused (and counted). */
  static final int TRANSFER_QUEUE = 1024;

  /** A save between {@link #beginSave} and {@link #endSave}. */
  private record SaveOp(StoreTransaction tx, int[][] tables, boolean[] failed, long began) {}

  /**
   * A load between {@link #beginLoad} and {@link #endLoad}. {@code copied} (null unless chunks are
   * copied in as a lower tier reads them) marks, by chunk from {@code tx.firstChunk()}, the chunks
   * already in the cache.
   */
  private record LoadOp(
      LoadTransaction tx,
      int[][] tables,
      int storedTokens,
      int from,
      int to,
      boolean[] failed,
      long began,
      AtomicIntegerArray copied) {}

  /**
   * Binds an engine to a paged KV cache; {@code threads} background transfer threads are started.
   *
   * @throws IllegalArgumentException if the cache's bytes per token differ from the engine's
   */
  public KvWorker(KvEngine engine, KvCacheTransfer cache, int threads) {
    this(engine, cache, threads, CacheGroups.fullAttention(cache.layerCount()));
  }

  /**
   * Like {@link #KvWorker(KvEngine, KvCacheTransfer, int)}, for a model whose layers form {@code
   * groups} (vLLM's hybrid KV cache manager): block tables come as {@link CacheGroups#split}
   * describes, each group's blocks are applied to its own layers only. Where a group attends to a
   * sliding window, vLLM frees the request's blocks that slid out of it while the request runs and
   * puts its null block (id 0) in their place:
   *
   * <ul>
   *   <li>hits are whole chunks, not whole blocks (the engine's block size is left alone); where
   *       every group slides, a hit needs only the chunks of the window before its end ({@link
   *       KvEngine#useSlidingWindow});
   *   <li>a save copies a sliding group's tokens only from the window before the chunk's last token
   *       on (whole blocks; the rest of its layers' rows are zeros), and stops before the first
   *       chunk whose window holds a null block: that part of the prompt is no longer the
   *       request's;
   *   <li>a load writes into a sliding group's blocks only where its table holds no null block, and
   *       fails (its tokens are recomputed) rather than write tokens the save did not keep.
   * </ul>
   *
   * <p>The caller saves such a model within the step ({@link #save}), not in the background: vLLM
   * may hand the blocks that slide out of a window to other requests in the next step.
   *
   * @throws IllegalArgumentException if the cache's bytes per token differ from the engine's, or
   *     the groups are not of the cache's layers
   */
  public KvWorker(KvEngine engine, KvCacheTransfer cache, int threads, CacheGroups groups) {
    if (groups.layerCount() != cache.layerCount()) {
      throw new IllegalArgumentException(
          "the groups are of "
              + groups.layerCount()
              + " layers; the cache has "
              + cache.layerCount());
    }
    this.groups = groups;
    this.engine = engine;
    this.cache = cache;
    this.chunkTokens = engine.chunkTokens();
    this.bytesPerToken = engine.bytesPerToken();
    if (cache.tokenBytes() != bytesPerToken) {
      throw new IllegalArgumentException(
          "the KV cache holds "
              + cache.tokenBytes()
              + " bytes per token; the engine was opened for "
              + bytesPerToken);
    }
    checkPositive(threads, "threads");
    if (!groups.slides()) {
      engine.useBlockSize(cache.layout().blockSize());
    } else if (groups.slidingOnly() > 0) {
      engine.useSlidingWindow(groups.slidingOnly(), cache.layout().blockSize());
    }
    this.transfers =
        new ThreadPoolExecutor(
            threads,
            threads,
            0,
            TimeUnit.MILLISECONDS,
            new ArrayBlockingQueue<>(TRANSFER_QUEUE),
            DaemonThreads.numbered("kvtier-transfer-"),
            new ThreadPoolExecutor.AbortPolicy());
  }

  // ---- saves ----------------------------------------------------------------------------------

  /**
   * Saves the prompt's chunks from {@code fromChunk} on, all layers at once.
   *
   * @return chunks stored (0 on failure, counted)
   */
  public int save(int[] tokens, int tokenCount, int[] blockIds, int fromChunk) {
    return save(tokens, tokenCount, KeyExtras.NONE, blockIds, fromChunk);
  }

  /** Like {@link #save(int[], int, int[], int)} with {@code extras} in the chunks' keys. */
  public int save(int[] tokens, int tokenCount, KeyExtras extras, int[] blockIds, int fromChunk) {
    return copyAndEndSave(beginSave(tokens, tokenCount, extras, blockIds, fromChunk));
  }

  /** Like {@link #save(int[], int, KeyExtras, int[], int)} with KV event tags. */
  public int save(
      int[] tokens,
      int tokenCount,
      KeyExtras extras,
      int[] blockIds,
      int fromChunk,
      long[][] tags) {
    return copyAndEndSave(beginSave(tokens, tokenCount, extras, blockIds, fromChunk, tags));
  }

  /** Gathers every layer of a {@link #beginSave} (handle 0: nothing) and ends it. */
  private int copyAndEndSave(long handle) {
    if (handle == 0) {
      return 0;
    }
    SaveOp op = saves.get(handle);
    copySaved(op, (seg, start, n) -> gather(op.tables, null, start, n, seg));
    return endSave(handle, true);
  }

  /**
   * Reserves the chunks a save will fill, layer by layer ({@link #saveLayer}), until {@link
   * #endSave}.
   *
   * @return a handle, or 0 when there is nothing to save (every chunk stored, no room, or bad
   *     arguments — counted)
   */
  public long beginSave(int[] tokens, int tokenCount, int[] blockIds, int fromChunk) {
    return beginSave(tokens, tokenCount, KeyExtras.NONE, blockIds, fromChunk);
  }

  /** Like {@link #beginSave(int[], int, int[], int)} with {@code extras} in the chunks' keys. */
  public long beginSave(
      int[] tokens, int tokenCount, KeyExtras extras, int[] blockIds, int fromChunk) {
    return beginSave(tokens, tokenCount, extras, blockIds, fromChunk, null);
  }

  /**
   * Like {@link #beginSave(int[], int, KeyExtras, int[], int)}, tagging chunk {@code c} with {@code
   * tags[c]} for KV events ({@link KvEngine#enableEvents}).
   */
  public long beginSave(
      int[] tokens,
      int tokenCount,
      KeyExtras extras,
      int[] blockIds,
      int fromChunk,
      long[][] tags) {
    long began = System.nanoTime();
    StoreTransaction tx;
    int[][] tables;
    try {
      checkNonNegative(fromChunk, "fromChunk");
      tables = groups.split(blockIds);
      tokenCount = windowsKept(tables, tokenCount, fromChunk);
      if (tokenCount <= fromChunk * chunkTokens) {
        return 0;
      }
      tx = engine.beginStore(tokens, tokenCount, extras, fromChunk, tags);
    } catch (RuntimeException e) {
      failedSaves.increment();
      errors.record(ErrorKind.SAVE_FAILED, "a save could not start", e);
      return 0;
    }
    if (tx.isEmpty()) {
      tx.abort();
      return 0;
    }
    long h = nextId.getAndIncrement();
    saves.put(h, new SaveOp(tx, tables, new boolean[1], began));
    return h;
  }

  /**
   * Copies layer {@code layer} of the tokens of a {@link #beginSave}. A copy that fails (a bad
   * block table) is counted and makes {@link #endSave} discard the save; it does not throw.
   *
   * @throws IllegalArgumentException if the handle is unknown or ended
   */
  public void saveLayer(long handle, int layer) {
    SaveOp op = saves.get(handle);
    if (op == null) {
      throw new IllegalArgumentException("unknown or ended save handle " + handle);
    }
    copySaved(op, (seg, start, n) -> gather(op.tables, layer, start, n, seg));
  }

  /**
   * Gathers tokens {@code [start, start + n)} into a chunk of {@code n} tokens: every layer, or
   * only {@code layer}; each group's layers under its own table, a sliding group's only from its
   * window on.
   */
  private void gather(int[][] tables, Integer layer, int start, int n, MemorySegment chunk) {
    if (groups.plain()) {
      if (layer == null) {
        cache.gather(tables[0], start, n, chunk);
      } else {
        cache.gatherLayer(layer, tables[0], start, n, chunk);
      }
      return;
    }
    for (int g = 0; g < groups.count(); g++) {
      int[] layers = layersMoved(g, layer);
      if (layers == null) {
        continue;
      }
      int from = start + n - keptTokens(g, start, start + n);
      if (from > start) { // rows the window does not need: zeros, not another request's bytes
        long layerBytes = n * cache.layout().tokenBytes();
        for (int l : layers) {
          chunk.asSlice(l * layerBytes, layerBytes).fill((byte) 0);
        }
      }
      cache.moveLayers(false, layers, chunk, n, tables[g], start, from - start, start + n - from);
    }
  }

  /**
   * How many of the tokens {@code [start, end)} of a chunk ending at {@code end} group {@code g}
   * keeps: all for full attention; for a sliding window, those of the whole blocks from the window
   * of the token before {@code end} on (a load may end at {@code end} or one token before it, when
   * the prompt ends there and vLLM computes its last token).
   */
  private int keptTokens(int g, int start, int end) {
    int window = groups.window(g);
    if (window == 0) {
      return end - start;
    }
    return end - Math.max(start, CacheGroups.keptFrom(end, window, cache.layout().blockSize()));
  }

  /**
   * The part of {@code [0, tokenCount)} a save may store: up to the first chunk from {@code
   * fromChunk} on whose kept window ({@link #keptTokens}) holds vLLM's null block in a sliding
   * group's table (those tokens are no longer the request's).
   */
  private int windowsKept(int[][] tables, int tokenCount, int fromChunk) {
    if (!groups.slides()) {
      return tokenCount;
    }
    int bs = cache.layout().blockSize();
    for (int c = fromChunk; c * chunkTokens < tokenCount; c++) {
      int start = c * chunkTokens;
      int end = Math.min(start + chunkTokens, tokenCount);
      for (int g = 0; g < groups.count(); g++) {
        int from = end - keptTokens(g, start, end);
        for (int b = from / bs; b < (end + bs - 1) / bs && b < tables[g].length; b++) {
          if (tables[g][b] == NULL_BLOCK) {
            return start;
          }
        }
      }
    }
    return tokenCount;
  }

  /**
   * Ends a save: with {@code ok}, and no copy of it failed, its chunks become visible; otherwise
   * they are discarded.
   *
   * @return chunks stored
   */
  public int endSave(long handle, boolean ok) {
    SaveOp op = saves.remove(handle);
    if (op == null) {
      throw new IllegalArgumentException("unknown or ended save handle " + handle);
    }
    awaitCopies(cache::completeGathers, op.failed, ErrorKind.SAVE_FAILED, "a save was discarded");
    ok &= !op.failed[0];
    if (!ok) {
      failedSaves.increment();
    }
    int stored;
    if (ok) {
      stored = op.tx.commit();
      savedBytes.add(op.tx.storedBytes());
      saveTimes.recordSince(op.began);
    } else {
      op.tx.abort();
      stored = 0;
    }
    savedChunks.add(stored);
    return stored;
  }

  @FunctionalInterface
  private interface ChunkCopy {
    void copy(MemorySegment chunk, int firstToken, int tokens);
  }

  /** Runs {@code copy} over a save's chunks unless one failed; a failure is recorded on it. */
  private void copySaved(SaveOp op, ChunkCopy copy) {
    if (op.failed[0]) {
      return;
    }
    try {
      forEachSaved(op, copy);
    } catch (RuntimeException e) {
      op.failed[0] = true;
      errors.record(ErrorKind.SAVE_FAILED, "a save was discarded", e);
    }
  }

  private void forEachSaved(SaveOp op, ChunkCopy copy) {
    for (int c = 0; c < op.tx.chunks(); c++) {
      ChunkBuffer chunk = op.tx.buffer(c);
      if (chunk != null) {
        int n = engine.chunkTokensAt(c, op.tx.tokenCount());
        copy.copy(segment(chunk, n), c * chunkTokens, n);
      }
    }
  }

  /**
   * Waits for the calling thread's copies of one direction ({@code complete}); a failure marks the
   * operation failed. Runs even for a failed operation, so no copy outlives its chunks.
   */
  private void awaitCopies(
      Runnable complete, boolean[] failed, ErrorKind kind, String consequence) {
    try {
      complete.run();
    } catch (RuntimeException e) {
      if (!failed[0]) {
        failed[0] = true;
        errors.record(kind, consequence, e);
      }
    }
  }

  // ---- loads ----------------------------------------------------------------------------------

  /**
   * Loads prompt tokens {@code [from, to)} into the request's blocks, all layers at once.
   *
   * @return the end of the loaded range: {@code to} when everything was loaded, less when chunks
   *     were missing or a copy failed (tokens from there on must be recomputed)
   */
  public int load(int[] tokens, int storedTokens, int[] blockIds, int from, int to) {
    return load(tokens, storedTokens, KeyExtras.NONE, blockIds, from, to);
  }

  /** Like {@link #load(int[], int, int[], int, int)} with {@code extras} in the chunks' keys. */
  public int load(
      int[] tokens, int storedTokens, KeyExtras extras, int[] blockIds, int from, int to) {
    // Where the cache allows, each chunk a lower tier reads is copied in as soon as it is read,
    // while the later ones are still being read; copyLoaded copies the rest.
    long h =
        begin(tokens, storedTokens, extras, blockIds, from, to, cache.copiesOnReadingThreads());
    copyLoaded(loads.get(h), null);
    return endLoad(h);
  }

  /**
   * Takes the stored chunks a load needs (reading lower tiers if it must), for {@link #loadLayer}
   * until {@link #endLoad}.
   *
   * @return a handle (a load that cannot start ends at {@code from})
   */
  public long beginLoad(int[] tokens, int storedTokens, int[] blockIds, int from, int to) {
    return beginLoad(tokens, storedTokens, KeyExtras.NONE, blockIds, from, to);
  }

  /** Like {@link #beginLoad(int[], int, int[], int, int)} with {@code extras} in the keys. */
  public long beginLoad(
      int[] tokens, int storedTokens, KeyExtras extras, int[] blockIds, int from, int to) {
    return begin(tokens, storedTokens, extras, blockIds, from, to, false);
  }

  /** {@link #beginLoad}, copying chunks in as a lower tier reads them if {@code copyOnArrival}. */
  private long begin(
      int[] tokens,
      int storedTokens,
      KeyExtras extras,
      int[] blockIds,
      int from,
      int to,
      boolean copyOnArrival) {
    long h = nextId.getAndIncrement();
    long began = System.nanoTime();
    int firstChunk = from / chunkTokens;
    try {
      if (from < 0 || from > to || to > storedTokens) {
        throw new IllegalArgumentException(
            "cannot load tokens [" + from + ", " + to + ") of a stored prefix of " + storedTokens);
      }
      int[][] tables = groups.split(blockIds);
      // Where every group slides, the chunks before all their windows are not read.
      firstChunk = firstNeeded(tables, from) / chunkTokens;
      int lastChunk = (to + chunkTokens - 1) / chunkTokens;
      AtomicIntegerArray copied =
          copyOnArrival ? new AtomicIntegerArray(Math.max(0, lastChunk - firstChunk)) : null;
      LoadOp reading =
          new LoadOp(null, tables, storedTokens, from, to, new boolean[1], began, copied);
      int first = firstChunk;
      int keyed = engine.keyedTokens(storedTokens);
      LoadTransaction tx =
          engine.beginLoad(
              tokens,
              storedTokens,
              extras,
              firstChunk,
              lastChunk,
              copied == null ? null : (chunk, c) -> copyArrived(reading, first, keyed, c, chunk));
      loads.put(h, new LoadOp(tx, tables, storedTokens, from, to, reading.failed, began, copied));
    } catch (RuntimeException e) {
      errors.record(ErrorKind.LOAD_FAILED, "a load could not start; its tokens are recomputed", e);
      loads.put(
          h, new LoadOp(null, null, storedTokens, from, to, new boolean[] {true}, began, null));
    }
    return h;
  }

  /** Copies layer {@code layer} of a {@link #beginLoad} into the cache. */
  public void loadLayer(long handle, int layer) {
    LoadOp op = loads.get(handle);
    if (op == null) {
      throw new IllegalArgumentException("unknown or ended load handle " + handle);
    }
    copyLoaded(op, layer);
  }

  /**
   * Ends a load and releases its chunks.
   *
   * @return the end of the loaded range (see {@link #load})
   */
  public int endLoad(long handle) {
    LoadOp op = loads.remove(handle);
    if (op == null) {
      throw new IllegalArgumentException("unknown or ended load handle " + handle);
    }
    // The chunks are released only once no copy reads them any more.
    awaitCopies(
        cache::completeScatters,
        op.failed,
        ErrorKind.LOAD_FAILED,
        "a load was abandoned; its tokens are recomputed");
    if (op.tx != null) {
      op.tx.close();
    }
    int end;
    if (op.failed[0]) {
      end = op.from;
    } else {
      int covered = (op.tx.firstChunk() + op.tx.size()) * chunkTokens;
      end = Math.max(op.from, Math.min(op.to, Math.min(covered, op.storedTokens)));
    }
    if (end < op.to) {
      failedLoads.increment();
    }
    if (end > op.from) {
      loadTimes.recordSince(op.began);
    }
    loadedTokens.add(end - op.from);
    return end;
  }

  /**
   * Scatters a load's chunks into every layer ({@code layer} null) or one layer, unless a copy
   * failed already; a failure is recorded on it.
   */
  private void copyLoaded(LoadOp op, Integer layer) {
    if (op.failed[0]) {
      return;
    }
    try {
      for (int i = 0; i < op.tx.size(); i++) {
        if (op.copied == null || op.copied.get(i) == 0) { // a load has at most its chunks
          copyChunk(op, layer, op.tx.firstChunk() + i, op.tx.buffer(i), op.tx.tokenCount());
        }
      }
    } catch (RuntimeException e) {
      op.failed[0] = true;
      errors.record(ErrorKind.LOAD_FAILED, "a load was abandoned; its tokens are recomputed", e);
    }
  }

  /**
   * Copies chunk {@code c}, just read by a lower tier on this thread, into the cache and marks it
   * copied. A chunk that does not copy stays unmarked: if it is part of the load, {@link
   * #copyLoaded} copies it again and reports the failure.
   */
  private void copyArrived(LoadOp op, int firstChunk, int keyed, int c, ChunkBuffer chunk) {
    try {
      copyChunk(op, null, c, chunk, keyed);
      op.copied.set(c - firstChunk, 1);
    } catch (RuntimeException e) {
      // left to copyLoaded
    }
  }

  /**
   * Copies a load's part of chunk {@code c} ({@code layer} alone, or every layer if null) into
   * every group's blocks. {@code keyed}: the stored prompt's keyed tokens.
   */
  private void copyChunk(LoadOp op, Integer layer, int c, ChunkBuffer chunk, int keyed) {
    if (groups.plain()) {
      copyRange(
          op,
          c,
          chunk,
          keyed,
          op.from,
          (seg, rows, start, skip, n) -> scatter(op, layer, seg, rows, start, skip, n));
      return;
    }
    for (int g = 0; g < groups.count(); g++) {
      int[] layers = layersMoved(g, layer);
      if (layers == null) {
        continue;
      }
      int group = g;
      copyRange(
          op,
          c,
          chunk,
          keyed,
          firstWritten(op.tables, g, op.from),
          (seg, rows, start, skip, n) -> {
            int savedFrom = start + rows - keptTokens(group, start, start + rows);
            if (start + skip < savedFrom) {
              throw new IllegalStateException(
                  "a sliding window needs tokens from "
                      + (start + skip)
                      + " of a chunk saved from "
                      + savedFrom);
            }
            cache.moveLayers(true, layers, seg, rows, op.tables[group], start, skip, n);
          });
    }
  }

  private void scatter(
      LoadOp op, Integer layer, MemorySegment seg, int rows, int start, int skip, int n) {
    if (layer == null) {
      cache.scatter(seg, rows, op.tables[0], start, skip, n);
    } else {
      cache.scatterLayer(layer, seg, rows, op.tables[0], start, skip, n);
    }
  }

  @FunctionalInterface
  private interface RangeCopy {
    void copy(MemorySegment chunk, int rowTokens, int chunkStart, int skip, int count);
  }

  /** Runs {@code copy} for chunk {@code c} of a load over its tokens from {@code from} on. */
  private void copyRange(LoadOp op, int c, ChunkBuffer chunk, int keyed, int from, RangeCopy copy) {
    int start = c * chunkTokens;
    // A run of whole blocks may be read from a longer stored chunk: its rows are that chunk's.
    int rows = (int) (chunk.length() / bytesPerToken);
    int lo = Math.max(from, start);
    int hi = Math.min(op.to, start + Math.min(rows, engine.chunkTokensAt(c, keyed)));
    if (hi > lo) {
      copy.copy(segment(chunk, rows), rows, start, lo - start, hi - lo);
    }
  }

  /** The first token from {@code from} on that some group's load writes. */
  private int firstNeeded(int[][] tables, int from) {
    int first = Integer.MAX_VALUE;
    for (int g = 0; g < groups.count(); g++) {
      first = Math.min(first, firstWritten(tables, g, from));
    }
    return first;
  }

  /**
   * The first token from {@code from} on that a load writes into group {@code g}: for a sliding
   * group, none where its table holds the null block.
   */
  private int firstWritten(int[][] tables, int g, int from) {
    return groups.window(g) == 0 ? from : Math.max(from, firstKeptToken(tables[g]));
  }

  /**
   * The layers of group {@code g} a copy moves: all of them ({@code layer} null), or {@code layer}
   * alone where it is in {@code g}; null where it is not.
   */
  private int[] layersMoved(int g, Integer layer) {
    if (layer == null) {
      return groups.layers(g);
    }
    return groups.groupOf(layer) == g ? new int[] {layer} : null;
  }

  /**
   * The first token whose block is not vLLM's null block (id 0): a sliding window's table holds the
   * null block where the window no longer reaches.
   */
  private int firstKeptToken(int[] blockIds) {
    int b = 0;
    while (b < blockIds.length && blockIds[b] == NULL_BLOCK) {
      b++;
    }
    return b * cache.layout().blockSize();
  }

  /** The first {@code tokens} tokens' bytes of {@code chunk} (throws if it is shorter). */
  private MemorySegment segment(ChunkBuffer chunk, int tokens) {
    return chunk.segment().asSlice(0, tokens * bytesPerToken);
  }

  // ---- background operations ------------------------------------------------------------------

  /**
   * {@link #save} on a transfer thread. The blocks must not be reused until the ticket completes.
   *
   * @return a ticket reported by {@link #drainCompleted} with the chunks stored
   */
  public long submitSave(int[] tokens, int tokenCount, int[] blockIds, int fromChunk) {
    return submitSave(tokens, tokenCount, KeyExtras.NONE, blockIds, fromChunk);
  }

  /** Like {@link #submitSave(int[], int, int[], int)} with {@code extras} in the chunks' keys. */
  public long submitSave(
      int[] tokens, int tokenCount, KeyExtras extras, int[] blockIds, int fromChunk) {
    return submitSave(tokens, tokenCount, extras, blockIds, fromChunk, null);
  }

  /** Like {@link #submitSave(int[], int, KeyExtras, int[], int)} with KV event tags. */
  public long submitSave(
      int[] tokens,
      int tokenCount,
      KeyExtras extras,
      int[] blockIds,
      int fromChunk,
      long[][] tags) {
    // Reserve on the caller's thread, so a lookup right after this returns sees the chunks as
    // being stored; the copies and the completion run on a transfer thread.
    long h = beginSave(tokens, tokenCount, extras, blockIds, fromChunk, tags);
    return submit(
        () -> copyAndEndSave(h),
        () -> {
          if (h != 0) {
            endSave(h, false); // releases the reserved chunks; counted as a failed save
          }
          return 0;
        });
  }

  /**
   * {@link #load} on a transfer thread (lower-tier reads included).
   *
   * @return a ticket reported by {@link #drainCompleted} with the end of the loaded range
   */
  public long submitLoad(int[] tokens, int storedTokens, int[] blockIds, int from, int to) {
    return submitLoad(tokens, storedTokens, KeyExtras.NONE, blockIds, from, to);
  }

  /** Like {@link #submitLoad(int[], int, int[], int, int)} with {@code extras} in the keys. */
  public long submitLoad(
      int[] tokens, int storedTokens, KeyExtras extras, int[] blockIds, int from, int to) {
    return submit(
        () -> load(tokens, storedTokens, extras, blockIds, from, to),
        () -> {
          failedLoads.increment(); // nothing loaded: vLLM recomputes [from, to)
          return from;
        });
  }

  /**
   * Runs {@code work} on a transfer thread; when the queue is full ({@value #TRANSFER_QUEUE}
   * waiting) the operation is refused instead: {@code refused} gives its result at once (a dropped
   * save, a load that loaded nothing), counted as a rejected transfer. Either way the result
   * arrives through {@link #drainCompleted}. Never blocks.
   */
  private long submit(Callable<Integer> work, IntSupplier refused) {
    long ticket = nextId.getAndIncrement();
    FutureTask<Integer> task =
        new FutureTask<>(
            () -> {
              int result = work.call();
              completed.add(new long[] {ticket, result});
              inFlight.remove(ticket);
              return result;
            });
    inFlight.put(ticket, task);
    try {
      transfers.execute(task);
    } catch (RejectedExecutionException e) {
      inFlight.remove(ticket);
      rejectedTransfers.increment();
      completed.add(new long[] {ticket, refused.getAsInt()});
    }
    return ticket;
  }

  /**
   * Takes the background operations finished since the last call.
   *
   * @return {@code [ticket_0, result_0, ticket_1, result_1, ...]}
   */
  public long[] drainCompleted() {
    List<long[]> done = new ArrayList<>();
    for (long[] d; (d = completed.poll()) != null; ) {
      done.add(d);
    }
    long[] out = new long[done.size() * 2];
    for (int i = 0; i < done.size(); i++) {
      out[2 * i] = done.get(i)[0];
      out[2 * i + 1] = done.get(i)[1];
    }
    return out;
  }

  /**
   * Waits until the given tickets have finished (their results still come from {@link
   * #drainCompleted}); unknown or finished tickets return at once.
   *
   * @return false if {@code timeoutMillis} passed first
   */
  public boolean awaitTickets(long[] tickets, long timeoutMillis) throws InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
    for (long t : tickets) {
      Future<Integer> f = inFlight.get(t);
      if (f == null) {
        continue;
      }
      try {
        f.get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
      } catch (ExecutionException e) {
        // save/load never throw; an error here is a bug reported with its cause
        errors.record(ErrorKind.TRANSFER_FAILED, "a background transfer failed", e.getCause());
      } catch (TimeoutException e) {
        return false;
      }
    }
    return true;
  }

  // ---- stats and lifecycle --------------------------------------------------------------------

  /** Counters in the order of {@link #statNames()}. */
  public long[] stats() {
    return new long[] {
      savedChunks.sum(),
      loadedTokens.sum(),
      failedSaves.sum(),
      failedLoads.sum(),
      rejectedTransfers.sum(),
      savedBytes.sum(),
      saveTimes.overflow() + loadTimes.overflow()
    };
  }

  /** Names of the {@link #stats()} entries. */
  public static String[] statNames() {
    return new String[] {
      "saved_chunks",
      "loaded_tokens",
      "failed_saves",
      "failed_loads",
      "rejected_transfers",
      "saved_bytes",
      "latencies_not_kept"
    };
  }

  /**
   * The durations of the saves and loads that ended since the last call, in nanoseconds: a save
   * from its reservation (the end of the step that wrote its tokens) until its chunks are visible,
   * a load from its first read until its last copy (of those that loaded anything); at most {@value
   * #LATENCY_SAMPLES} of each are kept between calls.
   *
   * @return {@code [saves, loads]}
   */
  public long[][] drainLatencies() {
    return new long[][] {saveTimes.drain(), loadTimes.drain()};
  }

  public KvCacheTransfer cache() {
    return cache;
  }

  /**
   * Stops the transfer threads after the operations already submitted (waiting up to 10 s) and ends
   * any operation left open. Does not close the engine. Idempotent.
   */
  @Override
  public void close() {
    transfers.shutdown();
    try {
      if (!transfers.awaitTermination(10, TimeUnit.SECONDS)) {
        LOG.log(System.Logger.Level.WARNING, "kvtier worker: transfers still running at close");
        transfers.shutdownNow();
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    saves.keySet().forEach(h -> endSave(h, false));
    loads.keySet().forEach(this::endLoad);
  }
}
