package io.kvtier.disk;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;

/**
 * A {@link DiskIo} that injects faults into the real one (after Lucene's MockDirectoryWrapper):
 * disk full, read-only (writes and deletes fail), I/O errors on reads, deletes refused, a directory
 * whose permissions were taken away, and writes or reads that block until released (each one that
 * reaches its gate says so in {@link #writesAtGate} or {@link #readsAtGate}). Records the order of
 * operations. Thread-safe; switch faults between operations.
 */
final class FaultyDiskIo implements DiskIo {
  enum Fault {
    NONE,
    DISK_FULL,
    READ_ONLY,
    READ_ERROR,
    DELETE_ERROR
  }

  private final DiskIo real = NioDiskIo.INSTANCE;
  volatile Fault fault = Fault.NONE;
  volatile CountDownLatch writeGate; // when set, writes wait for it
  final Semaphore writesAtGate = new Semaphore(0); // one permit per write that reached the gate
  volatile CountDownLatch readGate; // when set, reads wait for it
  final Semaphore readsAtGate = new Semaphore(0); // one permit per read that reached the gate
  final List<String> log = new CopyOnWriteArrayList<>();

  /** A file system of this many bytes under {@link #root} (MAX_VALUE: the real one's space). */
  volatile long capacity = Long.MAX_VALUE;

  volatile Path root;

  /**
   * A directory whose permissions were taken away (mode 000, for a process that is not root): reads
   * and writes of files under it are denied, and neither it nor anything under it can be searched
   * or written.
   */
  volatile Path denied;

  private void checkAllowed(Path file) throws AccessDeniedException {
    Path d = denied;
    if (d != null && file.startsWith(d)) {
      throw new AccessDeniedException(file.toString());
    }
  }

  private boolean allowed(Path dir) {
    Path d = denied;
    return d == null || !dir.startsWith(d);
  }

  /** Bytes of the files under {@link #root} now. */
  long used() throws IOException {
    long n = 0;
    for (Path f : real.list(root)) {
      n += real.size(f);
    }
    return n;
  }

  @Override
  public long usableSpace(Path dir) throws IOException {
    return capacity == Long.MAX_VALUE ? real.usableSpace(dir) : Math.max(0, capacity - used());
  }

  @Override
  public Object fileSystemOf(Path dir) throws IOException {
    return capacity == Long.MAX_VALUE ? real.fileSystemOf(dir) : this;
  }

  @Override
  public void writeAtomically(Path target, List<MemorySegment> parts, boolean direct)
      throws IOException {
    CountDownLatch gate = writeGate;
    if (gate != null) {
      writesAtGate.release();
      try {
        gate.await();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new IOException("interrupted");
      }
    }
    log.add("write " + target.getFileName());
    checkAllowed(target);
    switch (fault) {
      case DISK_FULL ->
          throw new FileSystemException(target.toString(), null, "No space left on device");
      case READ_ONLY -> throw new AccessDeniedException(target.toString());
      default -> {
        long bytes = parts.stream().mapToLong(MemorySegment::byteSize).sum();
        if (capacity != Long.MAX_VALUE && used() + bytes > capacity) {
          throw new FileSystemException(target.toString(), null, "No space left on device");
        }
        real.writeAtomically(target, parts, direct);
      }
    }
  }

  @Override
  public void read(Path file, long offset, MemorySegment into, boolean direct) throws IOException {
    CountDownLatch gate = readGate;
    if (gate != null) {
      readsAtGate.release();
      try {
        gate.await();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new IOException("interrupted");
      }
    }
    log.add("read " + file.getFileName());
    checkAllowed(file);
    if (fault == Fault.READ_ERROR) {
      throw new IOException("Input/output error");
    }
    real.read(file, offset, into, direct);
  }

  @Override
  public long size(Path file) throws IOException {
    return real.size(file);
  }

  @Override
  public void delete(Path file) throws IOException {
    log.add("delete " + file.getFileName());
    switch (fault) {
      case READ_ONLY ->
          throw new FileSystemException(file.toString(), null, "Read-only file system");
      case DELETE_ERROR -> throw new AccessDeniedException(file.toString());
      default -> {}
    }
    real.delete(file);
  }

  @Override
  public boolean writable(Path dir) {
    return fault != Fault.READ_ONLY && allowed(dir) && real.writable(dir);
  }

  @Override
  public boolean searchable(Path dir) {
    return allowed(dir) && real.searchable(dir);
  }

  @Override
  public List<Path> list(Path dir) throws IOException {
    return real.list(dir);
  }
}
