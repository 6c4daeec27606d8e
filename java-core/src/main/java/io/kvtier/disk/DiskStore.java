package io.kvtier.disk;

import static io.kvtier.Checks.checkPositive;

import io.kvtier.DaemonThreads;
import io.kvtier.config.ConfigException;
import io.kvtier.config.DiskSharding;
import io.kvtier.config.KvTierConfig;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.store.ErrorKind;
import io.kvtier.store.ErrorTally;
import io.kvtier.store.KvStore;
import io.kvtier.store.StoreCounters;
import io.kvtier.store.StoreStats;
import java.io.EOFException;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.ReadOnlyFileSystemException;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.BiConsumer;
import java.util.function.LongFunction;
import net.jpountz.lz4.LZ4Compressor;
import net.jpountz.lz4.LZ4Factory;
import net.jpountz.lz4.LZ4FastDecompressor;

/**
 * The disk tier: one file per chunk under one or more directories, written by background workers,
 * read in parallel, restart-safe.
 *
 * <p>Implementation note.
 *
 * <ul>
 *   <li><b>Files.</b> {@code <dir>/<namespace>/<hash[0:2]>/<hash>.kvc}, a {@link ChunkFileHeader}
 *       block then the (optionally LZ4-compressed) bytes padded to 4 KiB, so O_DIRECT works for
 *       every chunk size. Written to a temporary name and renamed: a reader never sees a partial
 *       file, and a crash leaves at most a temporary file, removed at the next start.
 *   <li><b>Index.</b> In memory (key → file, sizes, pins), in LRU order, rebuilt at start-up by
 *       reading each file's header block (oldest modification first). Guarded by its own monitor;
 *       no I/O happens under it.
 *   <li><b>Writes never block the caller.</b> {@link #put} retains the buffer and queues a task on
 *       the writer pool ({@code kvtier-disk-io-N}); more than {@code disk_queue} waiting puts drop
 *       the put (counted). The writer pool's queue is ordered prefetch &gt; delete &gt; put. Before
 *       writing, a worker reserves the file's bytes against the budget, deleting least recently
 *       used unpinned files as needed; the chunk becomes visible only after the rename.
 *   <li><b>Reads</b> go into buffers from the injected allocator (the CPU tier's pinned pool),
 *       checking the header, the key and a CRC32C of the stored bytes. A truncated, corrupt or
 *       mismatched file is a miss: deleted and counted. Batched gets read in parallel on the reader
 *       pool ({@code kvtier-disk-read-N}). A chunk being read is pinned so eviction skips it.
 *   <li><b>Errors</b> (disk full, read-only directory, I/O errors, files deleted behind our back)
 *       are counted by kind in an {@link ErrorTally}, which logs the first of each kind.
 * </ul>
 *
 * <p>Thread-safe. Owns its worker pools and scratch memory; does not own the allocator's pool.
 */
public final class DiskStore implements KvStore {
  /** How long {@link #close()} waits for queued writes, in milliseconds. */
  public static final long CLOSE_WAIT_MILLIS = 30_000;

  /** File name suffix of a chunk file. */
  public static final String SUFFIX = ".kvc";

  /** A compressed chunk is kept only if it is at most this fraction of the raw size. */
  static final double LZ4_KEEP_RATIO = 0.95;

  private static final System.Logger LOG = System.getLogger(DiskStore.class.getName());
  private static final int PRIORITY_PREFETCH = 0;
  private static final int PRIORITY_DELETE = 1;
  private static final int PRIORITY_PUT = 2;

  /** Settings of one disk store; see docs/configuration.md for the matching keys. */
  public record Settings(
      List<Path> dirs,
      DiskSharding sharding,
      long budgetBytes,
      boolean direct,
      boolean lz4,
      int writeThreads,
      int readThreads,
      int queueBound) {
    /** Validates counts and sizes. */
    public Settings {
      dirs = List.copyOf(dirs);
      if (dirs.isEmpty()) {
        throw new IllegalArgumentException("a disk store needs at least one directory");
      }
      checkPositive(budgetBytes, "budgetBytes");
      checkPositive(writeThreads, "writeThreads");
      checkPositive(readThreads, "readThreads");
      checkPositive(queueBound, "queueBound");
    }

    /**
     * The disk settings in {@code config} for tensor-parallel rank {@code rank}: with {@code
     * by_gpu} sharding this rank uses one of the directories, with {@code striped} all of them.
     */
    public static Settings from(KvTierConfig config, int rank) {
      List<Path> all = config.localDiskPaths();
      List<Path> dirs =
          config.localDiskPathSharding() == DiskSharding.BY_GPU
              ? List.of(all.get(rank % all.size()))
              : all;
      return new Settings(
          dirs,
          config.localDiskPathSharding(),
          config.maxLocalDiskBytes(),
          config.useODirect(),
          config.localDiskLz4(),
          config.diskWriteThreads(),
          config.diskReadThreads(),
          config.diskQueue());
    }
  }

  /** One file in the index. Immutable but for its pin count (lookups, readers). */
  private static final class Entry {
    final Path path;
    final long dataLength;
    final long fileBytes;
    final AtomicInteger pins = new AtomicInteger();

    Entry(Path path, long dataLength, long fileBytes) {
      this.path = path;
      this.dataLength = dataLength;
      this.fileBytes = fileBytes;
    }
  }

  private final Settings settings;
  private final DiskIo io;
  private final LongFunction<ChunkBuffer> buffers;
  private final ErrorTally errors = new ErrorTally(LOG, "disk tier");
  private final LZ4Compressor compressor;
  private final LZ4FastDecompressor decompressor;

  /** Visible chunks, read without locking (put and contains run on the caller's thread). */
  private final ConcurrentHashMap<ChunkKey, Entry> visible = new ConcurrentHashMap<>();

  // Guarded by index. The same entries as visible, in least-recently-used order.
  private final LinkedHashMap<ChunkKey, Entry> index = new LinkedHashMap<>(1024, 0.75f, true);
  private long usedBytes; // files in the index plus reservations of writes in flight

  private final Set<ChunkKey> pendingPuts = ConcurrentHashMap.newKeySet();
  private final AtomicInteger queuedPuts = new AtomicInteger();
  private final IoWorkers workers;
  private final ExecutorService readers;
  private final Arena scratchArena = Arena.ofShared();
  private final ThreadLocal<MemorySegment> headerScratch;
  private final ThreadLocal<MemorySegment[]> dataScratch = ThreadLocal.withInitial(() -> null);

  private final StoreCounters counters = new StoreCounters();
  private final LongAdder rawBytesWritten = new LongAdder();
  private final LongAdder storedBytesWritten = new LongAdder();
  private volatile boolean closed;

  /**
   * Opens a disk store: creates missing directories, removes temporary files left by a crash and
   * rebuilds the index from the chunk files' headers. Blocks on that I/O.
   *
   * @param buffers where chunks read from disk go: returns a buffer for that many bytes, or null
   *     when none is free (the read is then a miss)
   * @throws ConfigException if a directory cannot be created or written, or O_DIRECT is asked for
   *     on a file system without it
   */
  public DiskStore(Settings settings, LongFunction<ChunkBuffer> buffers, DiskIo io) {
    this.settings = settings;
    this.io = io;
    this.buffers = buffers;
    LZ4Factory lz4 = LZ4Factory.fastestInstance();
    this.compressor = lz4.fastCompressor();
    this.decompressor = lz4.fastDecompressor();
    this.headerScratch =
        ThreadLocal.withInitial(
            () -> scratchArena.allocate(ChunkFileHeader.BLOCK_BYTES, ChunkFileHeader.BLOCK_BYTES));
    for (Path dir : settings.dirs()) {
      prepareDirectory(dir);
    }
    rebuildIndex();
    this.workers = new IoWorkers(settings.writeThreads(), 3, "kvtier-disk-io-");
    this.readers =
        Executors.newFixedThreadPool(
            settings.readThreads(), DaemonThreads.numbered("kvtier-disk-read-"));
  }

  private void prepareDirectory(Path dir) {
    try {
      Files.createDirectories(dir);
    } catch (IOException e) {
      throw new ConfigException("local_disk path " + dir + " cannot be created: " + e);
    }
    if (!Files.isWritable(dir)) {
      throw new ConfigException("local_disk path " + dir + " is not writable");
    }
    if (settings.direct()) {
      Path probe = dir.resolve(".kvtier-odirect-probe");
      try (Arena a = Arena.ofConfined()) {
        MemorySegment block = a.allocate(ChunkFileHeader.BLOCK_BYTES, ChunkFileHeader.BLOCK_BYTES);
        io.writeAtomically(probe, List.of(block), true);
        io.read(probe, 0, block, true);
        io.delete(probe);
      } catch (IOException | UnsupportedOperationException e) {
        throw new ConfigException(
            "extra_config.use_odirect=true but "
                + dir
                + " does not support O_DIRECT ("
                + e
                + "); set use_odirect to false for this path");
      }
    }
  }

  /** Reads every chunk file's header; drops temporary and broken files. */
  private void rebuildIndex() {
    record Found(ChunkKey key, Path path, long dataLength, long fileBytes, long mtime) {}
    List<Found> found = new ArrayList<>();
    for (Path dir : settings.dirs()) {
      List<Path> files;
      try {
        files = io.list(dir);
      } catch (IOException e) {
        errors.record(ErrorKind.SCAN_FAILED, "cannot list " + dir, e);
        continue;
      }
      for (Path f : files) {
        String name = f.getFileName().toString();
        if (name.endsWith(NioDiskIo.TEMP_SUFFIX)) {
          deleteQuietly(f, "left over from an interrupted write");
          continue;
        }
        if (!name.endsWith(SUFFIX)) {
          continue;
        }
        try {
          MemorySegment block = headerScratch.get();
          io.read(f, 0, block, settings.direct());
          ChunkFileHeader h = ChunkFileHeader.decode(block);
          if (!f.equals(pathOf(h.key()))) {
            throw new CorruptChunkException("holds key " + h.key() + ", not the one its name says");
          }
          long size = io.size(f);
          if (size != h.fileBytes()) {
            throw new CorruptChunkException(
                "is " + size + " bytes, its header says " + h.fileBytes());
          }
          found.add(
              new Found(
                  h.key(),
                  f,
                  h.dataLength(),
                  h.fileBytes(),
                  Files.getLastModifiedTime(f).toMillis()));
        } catch (CorruptChunkException | EOFException e) {
          errors.record(ErrorKind.CORRUPT_FILE, f + " " + e.getMessage() + "; deleted", e);
          deleteQuietly(f, "corrupt");
        } catch (IOException e) {
          errors.record(ErrorKind.READ_FAILED, "cannot read the header of " + f, e);
        }
      }
    }
    found.sort(Comparator.comparingLong(Found::mtime));
    List<Path> victims = new ArrayList<>();
    synchronized (index) {
      for (Found f : found) {
        Entry e = new Entry(f.path(), f.dataLength(), f.fileBytes());
        index.put(f.key(), e);
        visible.put(f.key(), e);
        usedBytes += f.fileBytes();
      }
      evictUntilFits(0, victims);
    }
    victims.forEach(p -> deleteQuietly(p, "over the budget"));
    if (!found.isEmpty()) {
      LOG.log(
          System.Logger.Level.INFO,
          "disk tier: " + found.size() + " chunks found in " + settings.dirs() + " at start-up");
    }
  }

  /** The file of {@code key}. */
  Path pathOf(ChunkKey key) {
    String hash = key.hashHex();
    Path dir =
        settings.dirs().size() == 1
            ? settings.dirs().getFirst()
            : settings.dirs().get((int) Long.remainderUnsigned(key.h1(), settings.dirs().size()));
    return dir.resolve(HexFormat.of().toHexDigits(key.namespace()))
        .resolve(hash.substring(0, 2))
        .resolve(hash + SUFFIX);
  }

  // ---- KvStore --------------------------------------------------------------------------------

  @Override
  public boolean contains(ChunkKey key) {
    checkOpen();
    return visible.containsKey(key);
  }

  @Override
  public boolean put(ChunkKey key, ChunkBuffer chunk) {
    checkOpen();
    if (contains(key) || !pendingPuts.add(key)) {
      counters.duplicatePuts.increment();
      return false;
    }
    if (queuedPuts.incrementAndGet() > settings.queueBound()) {
      queuedPuts.decrementAndGet();
      pendingPuts.remove(key);
      counters.droppedPuts.increment();
      return false;
    }
    chunk.retain();
    Runnable done =
        () -> {
          chunk.release();
          pendingPuts.remove(key);
          queuedPuts.decrementAndGet();
        };
    return submit(PRIORITY_PUT, () -> write(key, chunk), done);
  }

  /** Queues {@code work} on the I/O workers; {@code cleanup} runs after it, or if it never runs. */
  private boolean submit(int priority, Runnable work, Runnable cleanup) {
    boolean queued =
        workers.submit(
            priority,
            new IoWorkers.Task() {
              @Override
              public void run() {
                try {
                  work.run();
                } finally {
                  cleanup.run();
                }
              }

              @Override
              public void cancel() {
                cleanup.run();
              }
            });
    if (!queued) {
      counters.droppedPuts.increment();
    }
    return queued;
  }

  private void write(ChunkKey key, ChunkBuffer chunk) {
    long dataLength = chunk.length();
    MemorySegment stored = chunk.segment();
    MemorySegment padded = chunk.paddedSegment();
    int flags = 0;
    if (settings.lz4()) {
      MemorySegment scratch = dataScratch(0, compressor.maxCompressedLength((int) dataLength));
      int n =
          compressor.compress(
              chunk.segment().asByteBuffer(),
              0,
              (int) dataLength,
              scratch.asByteBuffer(),
              0,
              (int) scratch.byteSize());
      if (n <= dataLength * LZ4_KEEP_RATIO) {
        stored = scratch.asSlice(0, n);
        padded = scratch;
        flags = ChunkFileHeader.FLAG_LZ4;
      }
    }
    ChunkFileHeader h =
        new ChunkFileHeader(key, flags, dataLength, stored.byteSize(), ChunkFileHeader.crc(stored));
    long paddedLength = ChunkFileHeader.padded(stored.byteSize());
    MemorySegment payload = padded.asSlice(0, paddedLength);
    payload.asSlice(stored.byteSize()).fill((byte) 0); // padding: never leak other bytes to disk
    List<Path> victims = new ArrayList<>();
    boolean reserved;
    synchronized (index) {
      reserved = evictUntilFits(h.fileBytes(), victims);
      if (reserved) {
        usedBytes += h.fileBytes();
      }
    }
    victims.forEach(p -> deleteQuietly(p, "evicted"));
    if (!reserved) {
      counters.droppedPuts.increment();
      return;
    }
    MemorySegment header = headerScratch.get();
    h.encode(header);
    Path target = pathOf(key);
    try {
      io.writeAtomically(target, List.of(header, payload), settings.direct());
    } catch (IOException | RuntimeException e) {
      synchronized (index) {
        usedBytes -= h.fileBytes();
      }
      counters.droppedPuts.increment();
      errors.record(writeErrorKind(e), "writing " + target + " failed", e);
      return;
    }
    Entry entry = new Entry(target, dataLength, h.fileBytes());
    synchronized (index) {
      index.put(key, entry);
      visible.put(key, entry);
    }
    counters.puts.increment();
    rawBytesWritten.add(dataLength);
    storedBytesWritten.add(stored.byteSize());
  }

  private static ErrorKind writeErrorKind(Throwable e) {
    String msg = String.valueOf(e.getMessage());
    if (e instanceof FileSystemException fse && String.valueOf(fse.getReason()).contains("space")
        || msg.contains("No space left")) {
      return ErrorKind.DISK_FULL;
    }
    if (e instanceof AccessDeniedException
        || e instanceof ReadOnlyFileSystemException
        || msg.contains("Read-only file system")) {
      return ErrorKind.READ_ONLY;
    }
    return ErrorKind.WRITE_FAILED;
  }

  /**
   * Makes room for {@code bytes} more by evicting least recently used unpinned files (their paths
   * go to {@code victims} for deletion outside the lock). Guarded by index.
   *
   * @return false if even evicting every unpinned file would not make room
   */
  private boolean evictUntilFits(long bytes, List<Path> victims) {
    Iterator<Map.Entry<ChunkKey, Entry>> it = index.entrySet().iterator();
    while (usedBytes + bytes > settings.budgetBytes() && it.hasNext()) {
      Map.Entry<ChunkKey, Entry> next = it.next();
      Entry e = next.getValue();
      if (e.pins.get() == 0) {
        it.remove();
        visible.remove(next.getKey(), e);
        usedBytes -= e.fileBytes;
        victims.add(e.path);
        counters.evictions.increment();
      }
    }
    return usedBytes + bytes <= settings.budgetBytes();
  }

  @Override
  public ChunkBuffer get(ChunkKey key) {
    checkOpen();
    Entry e;
    synchronized (index) {
      e = index.get(key); // also marks it recently used
      if (e != null) {
        e.pins.incrementAndGet(); // a reader pins the file against eviction
      }
    }
    if (e == null) {
      counters.misses.increment();
      return null;
    }
    try {
      ChunkBuffer b = read(key, e);
      (b == null ? counters.misses : counters.hits).increment();
      return b;
    } finally {
      e.pins.decrementAndGet();
    }
  }

  private ChunkBuffer read(ChunkKey key, Entry e) {
    ChunkBuffer b = null;
    boolean ok = false;
    try {
      MemorySegment header = headerScratch.get();
      io.read(e.path, 0, header, settings.direct());
      ChunkFileHeader h = ChunkFileHeader.decode(header);
      if (!h.key().equals(key) || h.dataLength() != e.dataLength) {
        throw new CorruptChunkException("header does not match the index");
      }
      b = buffers.apply(h.dataLength());
      if (b == null) {
        errors.record(ErrorKind.NO_BUFFER, "no free CPU buffer to read " + key + " into", null);
        return null;
      }
      long paddedLength = ChunkFileHeader.padded(h.storedLength());
      if (h.lz4()) {
        MemorySegment scratch = dataScratch(1, paddedLength);
        io.read(
            e.path,
            ChunkFileHeader.BLOCK_BYTES,
            scratch.asSlice(0, paddedLength),
            settings.direct());
        MemorySegment stored = scratch.asSlice(0, h.storedLength());
        checkCrc(h, stored);
        int read =
            decompressor.decompress(
                stored.asByteBuffer(), 0, b.segment().asByteBuffer(), 0, (int) h.dataLength());
        if (read != h.storedLength()) {
          throw new CorruptChunkException("LZ4 data length mismatch");
        }
      } else {
        MemorySegment into =
            settings.direct() ? b.paddedSegment().asSlice(0, paddedLength) : b.segment();
        io.read(e.path, ChunkFileHeader.BLOCK_BYTES, into, settings.direct());
        checkCrc(h, b.segment());
      }
      ok = true;
      return b;
    } catch (NoSuchFileException ex) {
      dropFromIndex(key, e);
      errors.record(ErrorKind.FILE_MISSING, e.path + " was deleted behind kvtier's back", ex);
      return null;
    } catch (CorruptChunkException | EOFException | net.jpountz.lz4.LZ4Exception ex) {
      dropFromIndex(key, e);
      deleteQuietly(e.path, "corrupt");
      errors.record(ErrorKind.CORRUPT_FILE, e.path + ": " + ex.getMessage() + "; deleted", ex);
      return null;
    } catch (IOException | RuntimeException ex) {
      errors.record(ErrorKind.READ_FAILED, "reading " + e.path + " failed", ex);
      return null;
    } finally {
      if (!ok && b != null) {
        b.release();
      }
    }
  }

  private static void checkCrc(ChunkFileHeader h, MemorySegment stored)
      throws CorruptChunkException {
    if (ChunkFileHeader.crc(stored) != h.dataCrc()) {
      throw new CorruptChunkException("data checksum mismatch");
    }
  }

  private void dropFromIndex(ChunkKey key, Entry e) {
    synchronized (index) {
      if (index.remove(key, e)) {
        visible.remove(key, e);
        usedBytes -= e.fileBytes;
      }
    }
  }

  /** A page-aligned per-thread scratch segment of at least {@code bytes} (slot 0 write, 1 read). */
  private MemorySegment dataScratch(int slot, long bytes) {
    MemorySegment[] s = dataScratch.get();
    if (s == null) {
      s = new MemorySegment[2];
      dataScratch.set(s);
    }
    long need = ChunkFileHeader.padded(bytes);
    if (s[slot] == null || s[slot].byteSize() < need) {
      s[slot] = scratchArena.allocate(need, ChunkFileHeader.BLOCK_BYTES);
    }
    return s[slot];
  }

  /**
   * Reads {@code keys} in parallel on the reader pool. Blocks until every read is done.
   *
   * @return one buffer per key (owned by the caller), null where the chunk is missing or unreadable
   */
  @Override
  public ChunkBuffer[] getBatch(ChunkKey[] keys) {
    checkOpen();
    List<Callable<ChunkBuffer>> reads = new ArrayList<>(keys.length);
    for (ChunkKey k : keys) {
      reads.add(() -> get(k));
    }
    ChunkBuffer[] out = new ChunkBuffer[keys.length];
    try {
      List<Future<ChunkBuffer>> done = readers.invokeAll(reads);
      for (int i = 0; i < out.length; i++) {
        out[i] = done.get(i).get();
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      releaseAll(out);
      throw new IllegalStateException("interrupted during a batched disk read", e);
    } catch (ExecutionException e) {
      releaseAll(out);
      throw new IllegalStateException("a batched disk read failed", e.getCause());
    }
    return out;
  }

  private static void releaseAll(ChunkBuffer[] buffers) {
    for (int i = 0; i < buffers.length; i++) {
      if (buffers[i] != null) {
        buffers[i].release();
        buffers[i] = null;
      }
    }
  }

  /**
   * Reads {@code keys} in the background, ahead of queued deletes and puts, handing each chunk
   * found to {@code sink} (which retains it if it keeps it; the store releases its reference after
   * the call). Does not block.
   */
  @Override
  public int prefetch(ChunkKey[] keys, BiConsumer<ChunkKey, ChunkBuffer> sink) {
    checkOpen();
    for (ChunkKey k : keys) {
      submit(
          PRIORITY_PREFETCH,
          () -> {
            ChunkBuffer b = get(k);
            if (b != null) {
              try {
                sink.accept(k, b);
              } finally {
                b.release();
              }
            }
          },
          () -> {});
    }
    return keys.length;
  }

  @Override
  public boolean pin(ChunkKey key) {
    checkOpen();
    synchronized (index) { // under the lock: eviction checks pins under it too
      Entry e = visible.get(key);
      if (e == null) {
        return false;
      }
      e.pins.incrementAndGet();
      return true;
    }
  }

  @Override
  public void unpin(ChunkKey key) {
    checkOpen();
    Entry e = visible.get(key);
    if (e != null) {
      e.pins.updateAndGet(n -> n > 0 ? n - 1 : 0);
    }
  }

  @Override
  public boolean remove(ChunkKey key) {
    checkOpen();
    Entry e;
    synchronized (index) {
      e = index.remove(key);
      if (e != null) {
        visible.remove(key, e);
        usedBytes -= e.fileBytes;
      }
    }
    if (e == null) {
      return false;
    }
    submit(PRIORITY_DELETE, () -> deleteQuietly(e.path, "removed"), () -> {});
    return true;
  }

  /**
   * Removes every chunk of the index and deletes its file in the background (reads already started
   * finish from their open file).
   *
   * @return chunks removed
   */
  @Override
  public Medium medium() {
    return Medium.DISK;
  }

  @Override
  public int clearLocal() {
    checkOpen();
    List<ChunkKey> keys;
    synchronized (index) {
      keys = List.copyOf(index.keySet());
    }
    int removed = 0;
    for (ChunkKey key : keys) {
      removed += remove(key) ? 1 : 0;
    }
    return removed;
  }

  private void deleteQuietly(Path p, String why) {
    try {
      io.delete(p);
    } catch (IOException e) {
      errors.record(ErrorKind.DELETE_FAILED, "cannot delete " + p + " (" + why + ")", e);
    }
  }

  @Override
  public StoreStats stats() {
    long entries;
    long bytes;
    synchronized (index) {
      entries = index.size();
      bytes = usedBytes;
    }
    return counters.snapshot(entries, bytes, errors.counts());
  }

  /** Errors by kind ({@code disk full}, {@code read-only}, {@code corrupt file}, ...). */
  public Map<ErrorKind, Long> errorCounts() {
    return errors.counts();
  }

  /** Raw chunk bytes written and bytes they took on disk (smaller with LZ4). */
  public long[] bytesWritten() {
    return new long[] {rawBytesWritten.sum(), storedBytesWritten.sum()};
  }

  /** Puts queued or being written. */
  public int queuedPuts() {
    return queuedPuts.get();
  }

  /**
   * Waits until the I/O workers have nothing queued or running: every put accepted is written (and
   * visible) or dropped, every queued delete and prefetch done, and the callers' buffers released.
   * Woken by the worker that finishes the last task; does not poll.
   */
  @Override
  public boolean awaitIdle(long timeoutMillis) throws InterruptedException {
    return workers.awaitIdle(timeoutMillis);
  }

  /**
   * Stops intake, lets queued writes finish (up to {@link #CLOSE_WAIT_MILLIS}), drops and logs what
   * is left, and stops the readers. Files stay for the next start. Idempotent.
   */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    int dropped = workers.shutdown(CLOSE_WAIT_MILLIS);
    if (dropped > 0) {
      LOG.log(
          System.Logger.Level.WARNING, "disk tier closing: " + dropped + " queued tasks dropped");
    }
    readers.shutdown();
    try {
      readers.awaitTermination(CLOSE_WAIT_MILLIS, TimeUnit.MILLISECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    if (workers.terminated() && readers.isTerminated()) {
      scratchArena.close();
    }
  }

  private void checkOpen() {
    if (closed) {
      throw new IllegalStateException("DiskStore is closed");
    }
  }

  @Override
  public String toString() {
    return "DiskStore" + settings.dirs();
  }
}
