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
import io.kvtier.store.TierListener;
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
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.FutureTask;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.LongAdder;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.BiConsumer;
import java.util.function.LongFunction;
import java.util.function.ObjIntConsumer;

/**
 * The disk tier: one file per chunk under one or more directories, written by background workers,
 * read in parallel, restart-safe.
 *
 * <p>Implementation note. This class orchestrates; the parts are apart:
 *
 * <ul>
 *   <li><b>Files.</b> {@code <dir>/<namespace>/<hash[0:2]>/<hash>.kvc} in the format of {@link
 *       ChunkFileCodec}: a {@link ChunkFileHeader} block then the (optionally LZ4-compressed) bytes
 *       padded to 4 KiB, so O_DIRECT works for every chunk size. Written through {@link DiskIo} to
 *       a temporary name and renamed: a reader never sees a partial file, and a crash leaves at
 *       most a temporary file, removed at the next start.
 *   <li><b>Index.</b> {@link DiskIndex}: in memory (key → file, sizes, pins), in LRU order, within
 *       the byte budget, rebuilt at start-up by reading each file's header block (oldest
 *       modification first). No I/O happens under its lock; the files it evicts are deleted here.
 *   <li><b>Writes never block the caller.</b> {@link #put} retains the buffer and queues a task on
 *       the I/O workers ({@link IoWorkers}, {@code kvtier-disk-io-N}); more than {@code disk_queue}
 *       waiting puts drop the put (counted). The workers take prefetch &gt; delete &gt; put. A
 *       worker encodes the chunk, reserves the file's bytes in the index (evicting least recently
 *       used unpinned files as needed), writes it; the chunk becomes visible only after the rename.
 *   <li><b>Reads</b> go into buffers from the injected allocator (the CPU tier's pinned pool),
 *       checked by the codec (header, key, CRC32C of the stored bytes). A truncated, corrupt or
 *       mismatched file is a miss: deleted and counted. Batched gets read in parallel on the reader
 *       pool ({@code kvtier-disk-read-N}), whose queue holds at most {@link
 *       Settings#readQueueBound()} reads: a read beyond that is refused at once, a miss counted as
 *       {@link ErrorKind#BACKLOG}; the caller never waits for queue space. Queued prefetches are
 *       bounded the same way. A chunk being read is pinned so eviction skips it.
 *   <li><b>Errors</b> (disk full, read-only directory, I/O errors, files deleted behind our back)
 *       are classified by {@link #classify} and counted by kind in an {@link ErrorTally}, which
 *       logs the first of each kind.
 * </ul>
 *
 * <p>Thread-safe. Owns its worker pools and the codec's scratch memory; does not own the
 * allocator's pool.
 */
public final class DiskStore implements KvStore {
  /** How long {@link #close()} waits for queued writes, in milliseconds. */
  public static final long CLOSE_WAIT_MILLIS = 30_000;

  /** File name suffix of a chunk file. */
  public static final String SUFFIX = ".kvc";

  /**
   * Reads that may wait for the reader pool (and prefetches for the I/O workers) unless the
   * settings say otherwise, in chunks; more are refused as misses.
   */
  public static final int DEFAULT_READ_QUEUE = 1024;

  private static final System.Logger LOG = System.getLogger(DiskStore.class.getName());
  private static final int MAX_UNDELETED = 65_536; // paths kept to delete again, at most
  private static final int PRIORITY_PREFETCH = 0;
  private static final int PRIORITY_DELETE = 1;
  private static final int PRIORITY_PUT = 2;

  /**
   * Settings of one disk store; see docs/configuration.md for the matching keys.
   *
   * @param queueBound puts that may wait for the writers ({@code disk_queue})
   * @param readQueueBound reads that may wait for the readers, and prefetches for the workers
   */
  public record Settings(
      List<Path> dirs,
      DiskSharding sharding,
      long budgetBytes,
      boolean direct,
      boolean lz4,
      int writeThreads,
      int readThreads,
      int queueBound,
      int readQueueBound) {
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
      checkPositive(readQueueBound, "readQueueBound");
    }

    /** Settings with a read queue of {@link #DEFAULT_READ_QUEUE}. */
    public Settings(
        List<Path> dirs,
        DiskSharding sharding,
        long budgetBytes,
        boolean direct,
        boolean lz4,
        int writeThreads,
        int readThreads,
        int queueBound) {
      this(
          dirs,
          sharding,
          budgetBytes,
          direct,
          lz4,
          writeThreads,
          readThreads,
          queueBound,
          DEFAULT_READ_QUEUE);
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

  /** What failed, for {@link #classify}: an operation on chunk files. */
  enum Op {
    /** Reading a chunk file or its header. */
    READ,
    /** Writing a chunk file. */
    WRITE,
    /** Deleting a chunk file or a temporary file. */
    DELETE,
    /** Listing a directory at start-up. */
    SCAN
  }

  private final Settings settings;
  private final DiskIo io;
  private final LongFunction<ChunkBuffer> buffers;
  private final ErrorTally errors = new ErrorTally(LOG, "disk tier");
  private final DiskIndex index;
  private final ChunkFileCodec codec;

  private final Set<ChunkKey> pendingPuts = ConcurrentHashMap.newKeySet();
  private final AtomicInteger queuedPuts = new AtomicInteger();
  private final AtomicInteger queuedPrefetches = new AtomicInteger();
  private final IoWorkers workers;
  private final ThreadPoolExecutor readers;

  private final StoreCounters counters = new StoreCounters();
  private final LongAdder rawBytesWritten = new LongAdder();
  private final LongAdder storedBytesWritten = new LongAdder();
  private volatile TierListener listener = TierListener.NONE;
  // Files evicted or removed whose deletion failed (a read-only file system): deleted again before
  // later writes, so they do not keep their space until the next start.
  private final java.util.Queue<Path> undeleted =
      new java.util.concurrent.ConcurrentLinkedQueue<>();
  private final java.util.concurrent.atomic.AtomicBoolean budgetLowered =
      new java.util.concurrent.atomic.AtomicBoolean();
  private volatile boolean closed;

  /** Block prefixes read from the headers at start-up, until the engine takes them. */
  private Map<ChunkKey, long[]> recoveredPrefixes = new LinkedHashMap<>();

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
    this.index = new DiskIndex(settings.budgetBytes());
    this.codec = new ChunkFileCodec(settings.lz4(), settings.direct());
    for (Path dir : settings.dirs()) {
      prepareDirectory(dir);
    }
    rebuildIndex();
    followFileSystems(true);
    this.workers = new IoWorkers(settings.writeThreads(), 3, "kvtier-disk-io-");
    this.readers =
        new ThreadPoolExecutor(
            settings.readThreads(),
            settings.readThreads(),
            0,
            TimeUnit.MILLISECONDS,
            new ArrayBlockingQueue<>(settings.readQueueBound()),
            DaemonThreads.numbered("kvtier-disk-read-"),
            new ThreadPoolExecutor.AbortPolicy());
  }

  /**
   * Sets the budget to what the file systems can take: the configured one, or, where that is more
   * than the files kvtier has there plus their free space (directories on one file system share
   * it), that much, so the tier evicts as it would at its own budget instead of failing every write
   * once full. Run at start, and before each write while the budget is below the configured one (a
   * statfs call per write, only while the disk is short), so it grows back as space comes free.
   * Lowering it while serving means other files took the space: counted as {@link
   * ErrorKind#DISK_FULL}, like a write that found the disk full (a file system smaller than the
   * budget from the start is only logged).
   */
  private void followFileSystems(boolean atStart) {
    long usable = usableSpace();
    if (usable < 0) {
      return;
    }
    long fits = Math.min(settings.budgetBytes(), index.usedBytes() + usable);
    if (fits < index.budgetBytes()) {
      String why = "its file systems have room for " + gib(fits) + " of chunks";
      shrinkBudget(fits, why);
      if (!atStart) {
        errors.record(ErrorKind.DISK_FULL, settings.dirs() + " filled up: " + why, null);
      }
    } else if (fits > index.budgetBytes()) { // space came free: nothing to evict
      index.setBudget(fits, new ArrayList<>());
    }
  }

  /** Free bytes of the file systems of the tier's directories together; -1 if unknown. */
  private long usableSpace() {
    long usable = 0;
    java.util.Set<Object> seen = new java.util.HashSet<>();
    try {
      for (Path dir : settings.dirs()) {
        if (seen.add(io.fileSystemOf(dir))) {
          usable += io.usableSpace(dir);
        }
      }
      return usable;
    } catch (IOException | RuntimeException e) {
      LOG.log(System.Logger.Level.DEBUG, "free space of " + settings.dirs() + " unknown: " + e);
      return -1;
    }
  }

  private void shrinkBudget(long bytes, String why) {
    long before = index.budgetBytes();
    if (bytes >= before) {
      return;
    }
    List<Path> evicted = new ArrayList<>();
    index.setBudget(bytes, evicted);
    deleteEvicted(evicted, "over the budget");
    LOG.log(
        budgetLowered.getAndSet(true) ? System.Logger.Level.DEBUG : System.Logger.Level.WARNING,
        "disk tier in "
            + settings.dirs()
            + ": budget lowered from "
            + gib(before)
            + " to "
            + gib(index.budgetBytes())
            + ": "
            + why
            + " (max_local_disk_size is more than the disk holds)");
  }

  private static String gib(long bytes) {
    return String.format(java.util.Locale.ROOT, "%.2f GiB", bytes / (double) (1L << 30));
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
    record Found(ChunkKey key, DiskIndex.Entry entry, long mtime, long[] prefixes) {}
    List<Found> found = new ArrayList<>();
    for (Path dir : settings.dirs()) {
      List<Path> files;
      try {
        files = io.list(dir);
      } catch (IOException e) {
        errors.record(classify(Op.SCAN, e), "cannot list " + dir, e);
        continue;
      }
      for (Path f : files) {
        String name = f.getFileName().toString();
        if (name.endsWith(NioDiskIo.TEMP_SUFFIX)) {
          errors.record(
              ErrorKind.PARTIAL_FILE, f + " left by a write that never ended; deleted", null);
          deleteQuietly(f, "left over from an interrupted write");
          continue;
        }
        if (!name.endsWith(SUFFIX)) {
          continue;
        }
        try {
          ChunkFileHeader h = codec.readHeader(io, f);
          if (!f.equals(pathOf(h.key()))) {
            throw new CorruptChunkException("holds key " + h.key() + ", not the one its name says");
          }
          found.add(
              new Found(
                  h.key(),
                  new DiskIndex.Entry(f, h.dataLength(), h.fileBytes()),
                  Files.getLastModifiedTime(f).toMillis(),
                  h.blockPrefixes()));
        } catch (IOException e) {
          ErrorKind kind = classify(Op.READ, e);
          if (kind == ErrorKind.CORRUPT_FILE) {
            errors.record(kind, f + " " + e.getMessage() + "; deleted", e);
            deleteQuietly(f, "corrupt");
          } else {
            errors.record(kind, "cannot read the header of " + f, e);
          }
        }
      }
    }
    found.sort(Comparator.comparingLong(Found::mtime));
    Map<ChunkKey, DiskIndex.Entry> oldestFirst = new LinkedHashMap<>();
    found.forEach(f -> oldestFirst.put(f.key(), f.entry()));
    List<Path> evicted = new ArrayList<>();
    index.load(oldestFirst, evicted);
    for (Found f : found) {
      if (f.prefixes().length > 0) {
        recoveredPrefixes.put(f.key(), f.prefixes());
      }
    }
    deleteEvicted(evicted, "over the budget");
    if (!found.isEmpty()) {
      LOG.log(
          System.Logger.Level.INFO,
          "disk tier: " + found.size() + " chunks found in " + settings.dirs() + " at start-up");
    }
  }

  @Override
  public synchronized void takeRecoveredPrefixes(BiConsumer<ChunkKey, long[]> sink) {
    Map<ChunkKey, long[]> taken = recoveredPrefixes;
    recoveredPrefixes = new LinkedHashMap<>();
    taken.forEach(sink);
  }

  /** The file of {@code key}. */
  Path pathOf(ChunkKey key) {
    String hash = key.hashHex();
    return dirOf(key)
        .resolve(HexFormat.of().toHexDigits(key.namespace()))
        .resolve(hash.substring(0, 2))
        .resolve(hash + SUFFIX);
  }

  /** The tier directory that holds {@code key}'s file. */
  private Path dirOf(ChunkKey key) {
    List<Path> dirs = settings.dirs();
    return dirs.size() == 1
        ? dirs.getFirst()
        : dirs.get((int) Long.remainderUnsigned(key.h1(), dirs.size()));
  }

  /**
   * The kind under which a failure of {@code op} is counted: the one place where disk errors are
   * classified, by exception type. Pure; never throws.
   *
   * <ul>
   *   <li>Reads: {@link NoSuchFileException} is a file deleted behind kvtier's back; {@link
   *       CorruptChunkException} and {@link EOFException} (a file cut short) are a corrupt file;
   *       anything else is a failed read.
   *   <li>Writes: {@link AccessDeniedException} (EACCES) and {@link ReadOnlyFileSystemException}
   *       are a read-only directory; ENOSPC is a full disk and EROFS a read-only file system, both
   *       recognised by the system's error text (see below); anything else is a failed write.
   *   <li>Deletes and directory listings have one kind each, whatever the exception.
   * </ul>
   */
  static ErrorKind classify(Op op, Throwable e) {
    return switch (op) {
      case READ -> {
        if (e instanceof NoSuchFileException) {
          yield ErrorKind.FILE_MISSING;
        }
        if (e instanceof CorruptChunkException || e instanceof EOFException) {
          yield ErrorKind.CORRUPT_FILE;
        }
        yield ErrorKind.READ_FAILED;
      }
      case WRITE -> {
        if (e instanceof AccessDeniedException || e instanceof ReadOnlyFileSystemException) {
          yield ErrorKind.READ_ONLY;
        }
        // The JDK gives only EACCES, ENOENT and EEXIST exception types of their own
        // (sun.nio.fs.UnixException#translateToIOException). Every other errno, ENOSPC and EROFS
        // included, arrives as a plain FileSystemException whose reason is strerror's text, and a
        // FileChannel.write that hits ENOSPC throws a plain IOException with that same text. So
        // these two errno values can only be told apart by that text; this is the one place that
        // reads it.
        if (e instanceof IOException) {
          String text =
              e instanceof FileSystemException fse && fse.getReason() != null
                  ? fse.getReason()
                  : String.valueOf(e.getMessage());
          if (text.contains("No space left")) {
            yield ErrorKind.DISK_FULL;
          }
          if (text.contains("Read-only file system")) {
            yield ErrorKind.READ_ONLY;
          }
        }
        yield ErrorKind.WRITE_FAILED;
      }
      case DELETE -> ErrorKind.DELETE_FAILED;
      case SCAN -> ErrorKind.SCAN_FAILED;
    };
  }

  // ---- KvStore --------------------------------------------------------------------------------

  @Override
  public boolean contains(ChunkKey key) {
    checkOpen();
    return index.contains(key);
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

  /**
   * Runs on an I/O worker: encode, reserve, write, then make the chunk visible. While the tier's
   * directory is read-only, a put is dropped (counted) before it evicts anything: the chunks held
   * can still be read, and nothing could take their place.
   */
  private void write(ChunkKey key, ChunkBuffer chunk) {
    Path target = pathOf(key);
    if (cannotMake(key, target)) {
      errors.record(ErrorKind.READ_ONLY, target + " cannot be written", null);
      counters.droppedPuts.increment();
      return;
    }
    ChunkFileCodec.Encoded file = codec.encode(key, chunk);
    if (!undeleted.isEmpty()) {
      undeleted.remove(target); // written again: the file is this chunk's from now on
      deleteAgain();
    }
    if (index.budgetBytes() < settings.budgetBytes()) {
      followFileSystems(false);
    }
    List<Path> evicted = new ArrayList<>();
    boolean reserved = index.reserve(file.fileBytes(), evicted);
    deleteEvicted(evicted, "evicted");
    if (!reserved) {
      if (index.budgetBytes() < settings.budgetBytes()) { // lowered by a full file system
        errors.record(ErrorKind.DISK_FULL, "no room for " + target + ": the disk is full", null);
      }
      counters.droppedPuts.increment();
      return;
    }
    try {
      io.writeAtomically(target, file.parts(), settings.direct());
    } catch (IOException | RuntimeException e) {
      index.cancel(file.fileBytes());
      ErrorKind kind = classify(Op.WRITE, e);
      errors.record(kind, "writing " + target + " failed", e);
      if (kind != ErrorKind.DISK_FULL || !writeAfterMakingRoom(target, file)) {
        counters.droppedPuts.increment();
        return;
      }
    }
    index.commit(key, new DiskIndex.Entry(target, chunk.length(), file.fileBytes()));
    listener.stored(key, Medium.DISK);
    counters.puts.increment();
    rawBytesWritten.add(chunk.length());
    storedBytesWritten.add(file.header().storedLength());
  }

  /**
   * A missing file whose cache directory is gone: the whole directory was removed (or its disk
   * unmounted), so every entry under it is dropped at once instead of one failed load each, and the
   * directory is made again for the saves to come.
   */
  private void forgetVanishedDirectory(Path missing) {
    for (Path dir : settings.dirs()) {
      if (missing.startsWith(dir) && !Files.isDirectory(dir)) {
        int dropped = index.removeUnder(dir);
        LOG.log(
            System.Logger.Level.WARNING,
            "disk tier: "
                + dir
                + " is gone; its "
                + dropped
                + " chunks are forgotten and the directory is made again");
        try {
          Files.createDirectories(dir);
        } catch (IOException | RuntimeException ex) {
          errors.record(classify(Op.WRITE, ex), "cannot make " + dir + " again", ex);
        }
      }
    }
  }

  /**
   * A file that could not be read under a directory of tier directory {@code root} that can no
   * longer be searched (its permissions were changed): every entry under the topmost such directory
   * is dropped at once, instead of one failed load each. Their files stay for a later start; writes
   * into it are refused (counted {@code read_only}) until it can be written again.
   */
  private void forgetUnsearchableDirectory(Path root, Path unreadable) {
    Path top = null;
    for (Path d = unreadable.getParent(); d != null && d.startsWith(root); d = d.getParent()) {
      if (!io.searchable(d)) {
        top = d;
      }
    }
    int dropped = top == null ? 0 : index.removeUnder(top);
    if (dropped > 0) { // else other reads of the same load found it first and said so
      LOG.log(
          System.Logger.Level.WARNING,
          "disk tier: "
              + top
              + " cannot be searched (were its permissions changed?); its other "
              + dropped
              + " chunks are forgotten, and saves into it are refused until it can be written");
    }
  }

  /**
   * The file system is full below the budget (other files took its space): the budget becomes what
   * the tier holds now, the oldest chunks make room for this one, and the write is tried once more.
   *
   * @return whether the write went through (reserved again; the caller commits it)
   */
  private boolean writeAfterMakingRoom(Path target, ChunkFileCodec.Encoded file) {
    shrinkBudget(index.usedBytes(), "the file system was full when writing " + target);
    List<Path> evicted = new ArrayList<>();
    boolean reserved = index.reserve(file.fileBytes(), evicted);
    deleteEvicted(evicted, "evicted");
    if (!reserved) {
      return false;
    }
    try {
      io.writeAtomically(target, file.parts(), settings.direct());
      return true;
    } catch (IOException | RuntimeException e) {
      index.cancel(file.fileBytes());
      errors.record(classify(Op.WRITE, e), "writing " + target + " failed again", e);
      return false;
    }
  }

  @Override
  public ChunkBuffer get(ChunkKey key) {
    checkOpen();
    DiskIndex.Entry e = index.acquire(key); // pins it against eviction while it is read
    if (e == null) {
      counters.misses.increment();
      return null;
    }
    try {
      ChunkBuffer b = read(key, e);
      (b == null ? counters.misses : counters.hits).increment();
      return b;
    } finally {
      index.release(e);
    }
  }

  /** Reads the file of {@code e}; null (counted) if it is missing, broken or unreadable. */
  private ChunkBuffer read(ChunkKey key, DiskIndex.Entry e) {
    try {
      ChunkBuffer b = codec.read(io, e.path, key, e.dataLength, buffers);
      if (b == null) {
        errors.record(ErrorKind.NO_BUFFER, "no free CPU buffer to read " + key + " into", null);
      }
      return b;
    } catch (IOException | RuntimeException ex) {
      ErrorKind kind = classify(Op.READ, ex);
      switch (kind) {
        case FILE_MISSING -> {
          index.remove(key, e);
          errors.record(kind, e.path + " was deleted behind kvtier's back", ex);
          forgetVanishedDirectory(e.path);
        }
        case CORRUPT_FILE -> {
          index.remove(key, e);
          deleteQuietly(e.path, "corrupt");
          errors.record(kind, e.path + ": " + ex.getMessage() + "; deleted", ex);
        }
        default -> {
          // Whatever the cause (an I/O error, permissions taken away), a chunk that could not be
          // read is not reported again, so it costs one failed load, not one per request. Its file
          // stays, in case the cause passes: the next start indexes it again.
          index.remove(key, e);
          errors.record(kind, "reading " + e.path + " failed; the chunk is forgotten", ex);
          forgetUnsearchableDirectory(dirOf(key), e.path);
        }
      }
      return null;
    }
  }

  /**
   * The buffers of one {@link #getBatch}; readers hand theirs over unless the caller gave up. A
   * reader's hand-over to the caller's {@code arrived} runs under the read lock of {@code
   * handOvers} and {@link #abandon} takes its write lock: once the caller has given up, no
   * hand-over is running or runs later (the caller may have reported the load failed and its blocks
   * may be reused).
   */
  private static final class Batch {
    // Guarded by this.
    final ChunkBuffer[] out;
    boolean abandoned;

    final ReentrantReadWriteLock handOvers = new ReentrantReadWriteLock();

    Batch(int size) {
      out = new ChunkBuffer[size];
    }

    /** {@code b}, first handed to {@code arrived} unless abandoned; released if that throws. */
    ChunkBuffer arrive(ChunkBuffer b, int slot, ObjIntConsumer<ChunkBuffer> arrived) {
      if (b == null || arrived == null) {
        return b;
      }
      handOvers.readLock().lock();
      try {
        if (!isAbandoned()) {
          arrived.accept(b, slot);
        }
      } catch (RuntimeException e) {
        b.release();
        throw e;
      } finally {
        handOvers.readLock().unlock();
      }
      return b;
    }

    synchronized boolean isAbandoned() {
      return abandoned;
    }

    synchronized void deliver(int i, ChunkBuffer b) {
      if (abandoned) {
        if (b != null) {
          b.release();
        }
      } else {
        out[i] = b;
      }
    }

    /**
     * Gives up: waits for hand-overs in progress, releases what arrived; what arrives later is
     * neither handed over nor kept (released on delivery).
     */
    void abandon() {
      handOvers.writeLock().lock();
      try {
        synchronized (this) {
          abandoned = true;
          for (int i = 0; i < out.length; i++) {
            if (out[i] != null) {
              out[i].release();
              out[i] = null;
            }
          }
        }
      } finally {
        handOvers.writeLock().unlock();
      }
    }
  }

  /**
   * Reads {@code keys} in parallel on the reader pool. Blocks until every read queued is done; a
   * read the full queue refuses is a miss at once (counted as {@link ErrorKind#BACKLOG}), never a
   * wait for queue space.
   *
   * @return one buffer per key (owned by the caller), null where the chunk is missing, unreadable
   *     or its read was refused
   * @throws IllegalStateException if the store is closed, the caller is interrupted (its interrupt
   *     flag is restored) or a read fails unexpectedly; no buffer is leaked then
   */
  @Override
  public ChunkBuffer[] getBatch(ChunkKey[] keys) {
    return getBatch(keys, null);
  }

  /**
   * {@link #getBatch(ChunkKey[])}, each reader handing its chunk to {@code arrived} (if not null)
   * as soon as it is read and checked, before the batch takes it over.
   */
  @Override
  public ChunkBuffer[] getBatch(ChunkKey[] keys, ObjIntConsumer<ChunkBuffer> arrived) {
    checkOpen();
    Batch batch = new Batch(keys.length);
    List<Future<?>> reads = new ArrayList<>(keys.length);
    for (int i = 0; i < keys.length; i++) {
      int slot = i;
      ChunkKey k = keys[i];
      FutureTask<Void> read =
          new FutureTask<>(() -> batch.deliver(slot, batch.arrive(get(k), slot, arrived)), null);
      try {
        readers.execute(read);
        reads.add(read);
      } catch (RejectedExecutionException e) {
        counters.misses.increment();
        errors.record(
            ErrorKind.BACKLOG,
            "the read queue is full ("
                + settings.readQueueBound()
                + " reads waiting); reading "
                + k
                + " is a miss",
            null);
      }
    }
    try {
      for (Future<?> read : reads) {
        read.get();
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      reads.forEach(r -> r.cancel(false)); // queued ones never run; running ones deliver
      batch.abandon();
      throw new IllegalStateException("interrupted during a batched disk read", e);
    } catch (ExecutionException e) {
      reads.forEach(r -> r.cancel(false));
      batch.abandon();
      throw new IllegalStateException("a batched disk read failed", e.getCause());
    }
    synchronized (batch) {
      return batch.out;
    }
  }

  /**
   * Reads {@code keys} in the background, ahead of queued deletes and puts, handing each chunk
   * found to {@code sink} (which retains it if it keeps it; the store releases its reference after
   * the call). At most {@link Settings#readQueueBound()} prefetches wait at a time; a key beyond
   * that is not queued (counted as {@link ErrorKind#BACKLOG}). Does not block.
   *
   * @return how many keys were queued
   */
  @Override
  public int prefetch(ChunkKey[] keys, BiConsumer<ChunkKey, ChunkBuffer> sink) {
    checkOpen();
    int queued = 0;
    for (ChunkKey k : keys) {
      if (queuedPrefetches.incrementAndGet() > settings.readQueueBound()) {
        queuedPrefetches.decrementAndGet();
        errors.record(
            ErrorKind.BACKLOG,
            "the prefetch queue is full ("
                + settings.readQueueBound()
                + " waiting); "
                + k
                + " is not prefetched",
            null);
        continue;
      }
      boolean ok =
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
              queuedPrefetches::decrementAndGet);
      queued += ok ? 1 : 0;
    }
    return queued;
  }

  @Override
  public boolean pin(ChunkKey key) {
    checkOpen();
    return index.pin(key);
  }

  @Override
  public void unpin(ChunkKey key) {
    checkOpen();
    index.unpin(key);
  }

  /**
   * Removes {@code key} from the index at once and deletes its file in the background. Deletes are
   * not bounded: each one follows the removal of an index entry, and dropping one would leave a
   * file that the next start-up indexes again.
   */
  @Override
  public boolean remove(ChunkKey key) {
    checkOpen();
    DiskIndex.Entry e = index.remove(key);
    if (e == null) {
      return false;
    }
    submit(PRIORITY_DELETE, () -> deleteQuietly(e.path, "removed"), () -> {});
    return true;
  }

  @Override
  public Medium medium() {
    return Medium.DISK;
  }

  /** Files found at start are not announced. */
  @Override
  public void listen(TierListener listener) {
    this.listener = listener;
    index.onRemoved(key -> listener.removed(key, Medium.DISK));
  }

  /**
   * Removes every chunk of the index and deletes its file in the background (reads already started
   * finish from their open file).
   *
   * @return chunks removed
   */
  @Override
  public int clearLocal() {
    checkOpen();
    int removed = 0;
    for (ChunkKey key : index.keys()) {
      removed += remove(key) ? 1 : 0;
    }
    return removed;
  }

  private void deleteEvicted(List<Path> evicted, String why) {
    counters.evictions.add(evicted.size());
    evicted.forEach(p -> deleteQuietly(p, why));
  }

  private void deleteQuietly(Path p, String why) {
    try {
      io.delete(p);
    } catch (IOException e) {
      errors.record(classify(Op.DELETE, e), "cannot delete " + p + " (" + why + ")", e);
      if (undeleted.size() < MAX_UNDELETED) {
        undeleted.add(p);
      }
    }
  }

  /** Deletes again the files whose deletion failed; those that fail again stay queued. */
  private void deleteAgain() {
    for (int n = undeleted.size(); n > 0; n--) {
      Path p = undeleted.poll();
      if (p == null) {
        return;
      }
      try {
        io.delete(p);
      } catch (IOException e) {
        undeleted.add(p); // counted when it first failed
        return; // the file system still refuses: try again with a later write
      }
    }
  }

  /**
   * Whether {@code key}'s file {@code target} cannot be made now: the nearest directory above it
   * that exists refuses writes (a read-only file system, or permissions taken away). One stat(2)
   * and one access(2) call per write where the chunk's directory exists; the directories the write
   * would make are not read-only.
   */
  private boolean cannotMake(ChunkKey key, Path target) {
    Path root = dirOf(key);
    for (Path d = target.getParent(); d != null && d.startsWith(root); d = d.getParent()) {
      if (Files.isDirectory(d)) {
        return !io.writable(d);
      }
    }
    return false;
  }

  @Override
  public StoreStats stats() {
    return counters.snapshot(index.size(), index.usedBytes(), errors.counts());
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
      codec.close();
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
