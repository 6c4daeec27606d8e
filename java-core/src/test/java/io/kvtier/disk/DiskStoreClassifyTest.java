package io.kvtier.disk;

import static io.kvtier.disk.DiskStore.classify;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.kvtier.disk.DiskStore.Op;
import io.kvtier.store.ErrorKind;
import java.io.EOFException;
import java.io.IOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.nio.file.ReadOnlyFileSystemException;
import org.junit.jupiter.api.Test;

/** Which error kind each failure of the disk tier is counted under. */
class DiskStoreClassifyTest {
  @Test
  void read_missingFile_isFileMissing() {
    assertEquals(ErrorKind.FILE_MISSING, classify(Op.READ, new NoSuchFileException("/d/a.kvc")));
  }

  @Test
  void read_corruptOrTruncated_isCorruptFile() {
    assertEquals(ErrorKind.CORRUPT_FILE, classify(Op.READ, new CorruptChunkException("bad")));
    assertEquals(ErrorKind.CORRUPT_FILE, classify(Op.READ, new EOFException("short")));
  }

  @Test
  void read_anythingElse_isReadFailed() {
    assertEquals(ErrorKind.READ_FAILED, classify(Op.READ, new IOException("Input/output error")));
    assertEquals(ErrorKind.READ_FAILED, classify(Op.READ, new AccessDeniedException("/d/a.kvc")));
    assertEquals(ErrorKind.READ_FAILED, classify(Op.READ, new IllegalStateException("x")));
  }

  @Test
  void write_noSpace_isDiskFull_whetherAFileSystemOrAChannelException() {
    assertEquals(
        ErrorKind.DISK_FULL,
        classify(Op.WRITE, new FileSystemException("/d/a.kvc", null, "No space left on device")));
    assertEquals(
        ErrorKind.DISK_FULL, classify(Op.WRITE, new IOException("No space left on device")));
  }

  @Test
  void write_permissionOrReadOnly_isReadOnly() {
    assertEquals(ErrorKind.READ_ONLY, classify(Op.WRITE, new AccessDeniedException("/d/a.kvc")));
    assertEquals(ErrorKind.READ_ONLY, classify(Op.WRITE, new ReadOnlyFileSystemException()));
    assertEquals(
        ErrorKind.READ_ONLY,
        classify(Op.WRITE, new FileSystemException("/d/a.kvc", null, "Read-only file system")));
  }

  @Test
  void write_anythingElse_isWriteFailed() {
    assertEquals(ErrorKind.WRITE_FAILED, classify(Op.WRITE, new IOException("Input/output error")));
    assertEquals(ErrorKind.WRITE_FAILED, classify(Op.WRITE, new IOException((String) null)));
    assertEquals(ErrorKind.WRITE_FAILED, classify(Op.WRITE, new NoSuchFileException("/d")));
    assertEquals(ErrorKind.WRITE_FAILED, classify(Op.WRITE, new UnsupportedOperationException()));
    assertEquals(
        ErrorKind.WRITE_FAILED,
        classify(Op.WRITE, new FileSystemException("/d/a.kvc", null, "Disk quota exceeded")));
  }

  @Test
  void deleteAndScan_haveOneKindEach() {
    assertEquals(ErrorKind.DELETE_FAILED, classify(Op.DELETE, new AccessDeniedException("/d")));
    assertEquals(ErrorKind.SCAN_FAILED, classify(Op.SCAN, new IOException("x")));
  }
}
