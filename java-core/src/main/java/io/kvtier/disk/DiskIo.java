package io.kvtier.disk;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.List;

/**
 * The file operations the disk tier performs, as one seam: {@link NioDiskIo} does them; tests wrap
 * it to inject faults (disk full, read-only, truncation, flipped bits).
 *
 * <p>Implementations must comply with:
 *
 * <ul>
 *   <li>{@link #writeAtomically} leaves either the complete file at {@code target} or nothing there
 *       (a temporary file, then a rename); a failure removes the temporary file.
 *   <li>With {@code direct}, buffers, offsets and lengths are multiples of 4096 and buffers are
 *       page-aligned (the caller guarantees it).
 *   <li>Every method is thread-safe and blocks on I/O (callers run it on I/O threads).
 * </ul>
 */
public interface DiskIo {
  /**
   * Writes {@code parts} in order to {@code target} through a temporary file in the same directory,
   * then renames it into place.
   *
   * @throws IOException on any failure; nothing is left at {@code target} or in temporary files
   */
  void writeAtomically(Path target, List<MemorySegment> parts, boolean direct) throws IOException;

  /**
   * Reads {@code into.byteSize()} bytes at {@code offset} of {@code file} into {@code into}.
   *
   * @throws java.io.EOFException if the file ends first
   * @throws java.nio.file.NoSuchFileException if the file is gone
   * @throws IOException on other failures
   */
  void read(Path file, long offset, MemorySegment into, boolean direct) throws IOException;

  /** The size of {@code file} in bytes. */
  long size(Path file) throws IOException;

  /** Deletes {@code file} if it exists. */
  void delete(Path file) throws IOException;

  /** Every regular file under {@code dir}, recursively; empty if {@code dir} does not exist. */
  List<Path> list(Path dir) throws IOException;

  /** Bytes the file system of {@code dir} still has for this process. */
  default long usableSpace(Path dir) throws IOException {
    return java.nio.file.Files.getFileStore(dir).getUsableSpace();
  }

  /** Whether files can be made in {@code dir} now (false on a read-only file system, say). */
  default boolean writable(Path dir) {
    return java.nio.file.Files.isWritable(dir);
  }

  /**
   * Whether files under {@code dir} can be reached now (search permission on it and every directory
   * above it: false once someone took them away).
   */
  default boolean searchable(Path dir) {
    return java.nio.file.Files.isExecutable(dir);
  }

  /** Which file system {@code dir} is on (directories on the same one share its space). */
  default Object fileSystemOf(Path dir) throws IOException {
    return java.nio.file.Files.getFileStore(dir);
  }
}
