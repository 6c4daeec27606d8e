package io.kvtier.disk;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.LogCapture;
import io.kvtier.config.DiskSharding;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.store.ErrorKind;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Restart safety, damaged files, faults, budget, queue bound and priorities of the disk tier. */
class DiskStoreTest {
  static final int CHUNK = 64 * 1024;

  @TempDir Path dir;
  ChunkPool pool;
  final FaultyDiskIo io = new FaultyDiskIo();

  @BeforeEach
  void setUp() {
    pool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK, 256L * CHUNK, 1 << 22);
  }

  @AfterEach
  void tearDown() {
    assertEquals(0, pool.inUseSlots(), "leaked buffers");
    pool.close();
  }

  DiskStore open(long budgetChunks, int writers, int queue, boolean direct, boolean lz4) {
    return new DiskStore(
        new DiskStore.Settings(
            List.of(dir),
            DiskSharding.BY_GPU,
            budgetChunks * (CHUNK + 2L * ChunkFileHeader.BLOCK_BYTES),
            direct,
            lz4,
            writers,
            4,
            queue),
        pool::tryAllocate,
        io);
  }

  DiskStore open() {
    return open(100, 2, 1024, false, false);
  }

  static ChunkKey key(int i) {
    return new ChunkKey(5, i, 1000 + i);
  }

  static byte[] content(int i, int length) {
    byte[] b = new byte[length];
    new Random(i).nextBytes(b);
    return b;
  }

  void put(DiskStore s, int i, int length) {
    ChunkBuffer b = pool.tryAllocate(length);
    MemorySegment.copy(content(i, length), 0, b.segment(), ValueLayout.JAVA_BYTE, 0, length);
    s.put(key(i), b);
    b.release();
  }

  static void await(DiskStore s) throws InterruptedException {
    assertTrue(s.awaitIdle(60_000), "writes did not finish");
  }

  void assertHolds(DiskStore s, int i, int length) {
    ChunkBuffer got = s.get(key(i));
    assertNotNull(got, "chunk " + i + " missing");
    assertArrayEquals(content(i, length), got.segment().toArray(ValueLayout.JAVA_BYTE));
    got.release();
  }

  List<Path> files(String suffix) throws IOException {
    try (Stream<Path> s = Files.walk(dir)) {
      return s.filter(p -> p.toString().endsWith(suffix)).toList();
    }
  }

  @Test
  void restart_rebuildsIndexFromFiles_andKeepsEveryByte() throws Exception {
    try (DiskStore s = open()) {
      for (int i = 0; i < 10; i++) {
        put(s, i, i == 9 ? 1000 : CHUNK);
      }
      await(s);
    }
    try (DiskStore s = open()) {
      assertEquals(10, s.stats().entries());
      for (int i = 0; i < 9; i++) {
        assertHolds(s, i, CHUNK);
      }
      assertHolds(s, 9, 1000);
    }
  }

  @Test
  void startUp_removesTemporaryFiles_andDeletesCorruptHeaders() throws Exception {
    try (DiskStore s = open()) {
      put(s, 1, CHUNK);
      put(s, 2, CHUNK);
      await(s);
    }
    Path good = files(DiskStore.SUFFIX).get(0);
    Files.writeString(good.resolveSibling("x.kvc.1234.tmp"), "half a write");
    Path bad = files(DiskStore.SUFFIX).get(1);
    try (RandomAccessFile f = new RandomAccessFile(bad.toFile(), "rw")) {
      f.seek(30);
      f.write(0x5A); // inside the header: the header checksum no longer matches
    }
    try (DiskStore s = open()) {
      assertEquals(1, s.stats().entries());
      assertEquals(1L, s.errorCounts().get(ErrorKind.CORRUPT_FILE));
      assertTrue(files(".tmp").isEmpty(), "temporary files are removed at start-up");
      assertEquals(1L, s.errorCounts().get(ErrorKind.PARTIAL_FILE), "and counted");
      assertFalse(Files.exists(bad), "a corrupt file is deleted");
    }
  }

  @Test
  void flippedDataByte_isAMiss_deletedAndCounted_neverWrongBytes() throws Exception {
    try (DiskStore s = open()) {
      put(s, 1, CHUNK);
      await(s);
      Path f = files(DiskStore.SUFFIX).get(0);
      try (RandomAccessFile raf = new RandomAccessFile(f.toFile(), "rw")) {
        raf.seek(ChunkFileHeader.BLOCK_BYTES + 12345);
        int b = raf.read();
        raf.seek(ChunkFileHeader.BLOCK_BYTES + 12345);
        raf.write(b ^ 0x01);
      }
      assertNull(s.get(key(1)));
      assertFalse(s.contains(key(1)));
      assertFalse(Files.exists(f));
      assertEquals(1L, s.errorCounts().get(ErrorKind.CORRUPT_FILE));
    }
  }

  @Test
  void truncatedFile_isAMiss_deletedAndCounted() throws Exception {
    try (DiskStore s = open()) {
      put(s, 1, CHUNK);
      await(s);
      Path f = files(DiskStore.SUFFIX).get(0);
      try (RandomAccessFile raf = new RandomAccessFile(f.toFile(), "rw")) {
        raf.setLength(ChunkFileHeader.BLOCK_BYTES + 100);
      }
      assertNull(s.get(key(1)));
      assertEquals(1L, s.errorCounts().get(ErrorKind.CORRUPT_FILE));
      assertFalse(Files.exists(f));
    }
  }

  @Test
  void fileDeletedBehindOurBack_isAMissAndCounted() throws Exception {
    try (DiskStore s = open()) {
      put(s, 1, CHUNK);
      put(s, 2, CHUNK);
      await(s);
      for (Path f : files(DiskStore.SUFFIX)) {
        Files.delete(f);
      }
      assertNull(s.get(key(1)));
      assertNull(s.get(key(2)));
      assertFalse(s.contains(key(1)));
      assertEquals(2L, s.errorCounts().get(ErrorKind.FILE_MISSING));
    }
  }

  long fileBytes() throws IOException {
    return Files.size(files(DiskStore.SUFFIX).get(0));
  }

  @Test
  void aFileSystemSmallerThanTheBudget_isFilledAndEvictedLikeTheBudget() throws Exception {
    long perFile;
    try (DiskStore s = open()) {
      put(s, 0, CHUNK);
      await(s);
      perFile = fileBytes();
    }
    io.root = dir;
    io.capacity = 4 * perFile + perFile / 2; // room for 4 files; the budget says 100
    try (DiskStore s = open()) {
      for (int i = 1; i <= 10; i++) {
        put(s, i, CHUNK);
        await(s);
      }
      for (int i = 8; i <= 10; i++) {
        assertHolds(s, i, CHUNK); // the newest are kept, as at the tier's own budget
      }
      assertTrue(s.stats().entries() <= 4, "entries " + s.stats().entries());
      assertTrue(s.stats().evictions() >= 6, "the oldest were evicted to make room");
      assertEquals(0, s.stats().droppedPuts(), "no save was dropped");
      assertNull(s.errorCounts().get(ErrorKind.DISK_FULL), "the budget followed the disk");
    }
  }

  @Test
  void aShortFileSystemThatOtherFilesFillFurther_countsDiskFull_andEvicts() throws Exception {
    long perFile;
    try (DiskStore s = open()) {
      put(s, 0, CHUNK);
      await(s);
      perFile = fileBytes();
    }
    io.root = dir;
    io.capacity = 5 * perFile + perFile / 2; // smaller than the budget from the start
    try (DiskStore s = open()) {
      for (int i = 1; i <= 2; i++) {
        put(s, i, CHUNK);
        await(s);
      }
      assertNull(s.errorCounts().get(ErrorKind.DISK_FULL), "a short disk alone is no fault");
      io.capacity = 4 * perFile + perFile / 2; // another program took the room of one file
      for (int i = 5; i <= 7; i++) {
        put(s, i, CHUNK);
        await(s);
      }
      assertTrue(
          s.errorCounts().getOrDefault(ErrorKind.DISK_FULL, 0L) >= 1, "the filled disk is counted");
      assertEquals(0, s.stats().droppedPuts(), "each save made room and went through");
      for (int i = 5; i <= 7; i++) {
        assertHolds(s, i, CHUNK);
      }
    }
  }

  @Test
  void aDiskThatFillsUpUnderTheTier_makesRoomByEvicting_andGrowsBackWhenFreed() throws Exception {
    long perFile;
    try (DiskStore s = open()) {
      put(s, 0, CHUNK);
      await(s);
      perFile = fileBytes();
      io.root = dir;
      io.capacity = 3 * perFile + perFile / 2; // another program took the rest of the disk
      for (int i = 1; i <= 8; i++) {
        put(s, i, CHUNK);
        await(s);
      }
      for (int i = 6; i <= 8; i++) {
        assertHolds(s, i, CHUNK);
      }
      assertTrue(s.errorCounts().get(ErrorKind.DISK_FULL) >= 1, "the full disk is counted");
      assertEquals(0, s.stats().droppedPuts(), "each save made room and went through");
      assertTrue(files(".tmp").isEmpty());
      io.capacity = Long.MAX_VALUE; // the other program's files are gone
      for (int i = 10; i <= 16; i++) {
        put(s, i, CHUNK);
        await(s);
      }
      assertTrue(s.stats().entries() >= 7, "the tier grew back: " + s.stats().entries());
      for (int i = 10; i <= 16; i++) {
        assertHolds(s, i, CHUNK);
      }
    }
  }

  @Test
  void aVanishedCacheDirectory_dropsItsWholeIndexAtTheFirstMiss_andSavesGoOn() throws Exception {
    try (DiskStore s = open()) {
      for (int i = 0; i < 4; i++) {
        put(s, i, CHUNK);
      }
      await(s);
      try (Stream<Path> all = Files.walk(dir)) {
        for (Path p : all.sorted(java.util.Comparator.reverseOrder()).toList()) {
          Files.delete(p);
        }
      }
      assertNull(s.get(key(0)));
      assertEquals(1L, s.errorCounts().get(ErrorKind.FILE_MISSING), "one failed read, not four");
      assertEquals(0, s.stats().entries(), "every entry under the directory is forgotten");
      for (int i = 1; i < 4; i++) {
        assertFalse(s.contains(key(i)), "chunk " + i + " is not offered any more");
      }
      put(s, 1, CHUNK); // saved again, not taken for a duplicate
      await(s);
      assertHolds(s, 1, CHUNK);
    }
  }

  @Test
  void diskFull_dropsPutsAndCounts_thenRecovers() throws Exception {
    try (DiskStore s = open()) {
      io.fault = FaultyDiskIo.Fault.DISK_FULL;
      for (int i = 0; i < 5; i++) {
        put(s, i, CHUNK);
      }
      await(s);
      // each write fails, and a write tried again after making room fails too (two writers may
      // each find room the other's shrink gave back)
      assertTrue(s.errorCounts().get(ErrorKind.DISK_FULL) >= 5);
      assertEquals(5, s.stats().droppedPuts(), "every put dropped, counted once");
      assertEquals(0, s.stats().entries());
      assertEquals(0, s.stats().bytes(), "failed writes give their reservation back");
      assertTrue(files(".tmp").isEmpty());
      io.fault = FaultyDiskIo.Fault.NONE;
      put(s, 7, CHUNK);
      await(s);
      assertHolds(s, 7, CHUNK);
    }
  }

  @Test
  void readOnlyDirectory_dropsPutsAndCounts() throws Exception {
    try (DiskStore s = open()) {
      io.fault = FaultyDiskIo.Fault.READ_ONLY;
      put(s, 1, CHUNK);
      put(s, 2, CHUNK);
      await(s);
      assertEquals(2L, s.errorCounts().get(ErrorKind.READ_ONLY));
      assertFalse(s.contains(key(1)));
    }
  }

  @Test
  void aDiskTurnedReadOnly_keepsServingWhatItHolds_evictsNothing_andSavesResumeAfter()
      throws Exception {
    try (DiskStore s = open(4, 1, 1024, false, false)) {
      for (int i = 0; i < 4; i++) {
        put(s, i, CHUNK); // the budget is full
      }
      await(s);
      io.fault = FaultyDiskIo.Fault.READ_ONLY; // remounted read-only
      for (int i = 4; i < 8; i++) {
        put(s, i, CHUNK);
        await(s);
      }
      assertEquals(4L, s.errorCounts().get(ErrorKind.READ_ONLY), "each refused put counted");
      for (int i = 0; i < 4; i++) {
        assertHolds(s, i, CHUNK); // nothing evicted for writes that could not happen
      }
      io.fault = FaultyDiskIo.Fault.NONE; // writable again
      for (int i = 8; i < 12; i++) {
        put(s, i, CHUNK);
        await(s);
      }
      for (int i = 8; i < 12; i++) {
        assertHolds(s, i, CHUNK);
      }
      assertEquals(s.stats().entries(), files(DiskStore.SUFFIX).size(), "no file left behind");
    }
  }

  @Test
  void anEvictedFileThatCouldNotBeDeleted_isDeletedByALaterWrite() throws Exception {
    try (DiskStore s = open(4, 1, 1024, false, false)) {
      for (int i = 0; i < 4; i++) {
        put(s, i, CHUNK);
      }
      await(s);
      io.fault = FaultyDiskIo.Fault.DELETE_ERROR;
      put(s, 4, CHUNK); // evicts chunk 0, whose file stays
      await(s);
      assertEquals(1L, s.errorCounts().get(ErrorKind.DELETE_FAILED));
      assertEquals(5, files(DiskStore.SUFFIX).size());
      io.fault = FaultyDiskIo.Fault.NONE;
      put(s, 5, CHUNK);
      await(s);
      assertEquals(4, s.stats().entries());
      assertEquals(4, files(DiskStore.SUFFIX).size(), "the evicted file deleted after all");
      assertHolds(s, 5, CHUNK);
    }
  }

  @Test
  void readError_isAMiss_theChunkIsNotReportedAgain_itsFileIsKeptForTheNextStart()
      throws Exception {
    try (DiskStore s = open()) {
      put(s, 1, CHUNK);
      put(s, 2, CHUNK);
      await(s);
      io.fault = FaultyDiskIo.Fault.READ_ERROR;
      assertNull(s.get(key(1)));
      assertEquals(1L, s.errorCounts().get(ErrorKind.READ_FAILED));
      io.fault = FaultyDiskIo.Fault.NONE;
      // One failed load, not one per request: a lookup no longer reports what could not be read.
      assertFalse(s.contains(key(1)));
      assertHolds(s, 2, CHUNK);
    }
    try (DiskStore s = open()) {
      assertHolds(s, 1, CHUNK); // the error passed: the next start finds the file again
    }
  }

  @Test
  void aDirectoryWhosePermissionsWereTakenAway_isForgottenAtOnce_andSavesResumeOnceRestored()
      throws Exception {
    try (LogCapture log = new LogCapture();
        DiskStore s = open(100, 1, 1024, false, false)) {
      for (int i = 0; i < 4; i++) {
        put(s, i, CHUNK);
      }
      await(s);
      Path namespace = s.pathOf(key(0)).getParent().getParent(); // holds every chunk here
      io.denied = namespace; // chmod 000
      assertNull(s.get(key(0)));
      assertEquals(1L, s.errorCounts().get(ErrorKind.READ_FAILED));
      for (int i = 0; i < 4; i++) {
        assertFalse(s.contains(key(i)), "chunk " + i + " forgotten with the first failed read");
      }
      assertEquals(0, s.stats().entries());
      assertTrue(
          log.records().stream()
              .anyMatch(
                  r ->
                      r.contains(namespace + " cannot be searched")
                          && r.contains("other 3 chunks")),
          log.records().toString());
      put(s, 4, CHUNK);
      await(s);
      assertEquals(1L, s.errorCounts().get(ErrorKind.READ_ONLY), "the save refused, counted");
      assertEquals(null, s.errorCounts().get(ErrorKind.WRITE_FAILED));
      assertFalse(s.contains(key(4)));
      io.denied = null; // chmod 755
      put(s, 5, CHUNK);
      await(s);
      assertHolds(s, 5, CHUNK);
    }
    try (DiskStore s = open(100, 1, 1024, false, false)) {
      for (int i : new int[] {0, 1, 2, 3, 5}) {
        assertHolds(s, i, CHUNK); // their files stayed
      }
      assertFalse(s.contains(key(4)));
    }
  }

  @Test
  void budget_isNeverExceeded_andLeastRecentlyUsedGoesFirst() throws Exception {
    try (DiskStore s = open(4, 1, 1024, false, false)) {
      for (int i = 0; i < 4; i++) {
        put(s, i, CHUNK);
      }
      await(s);
      assertHolds(s, 0, CHUNK); // 0 is now recently used; 1 is the eldest
      for (int i = 4; i < 6; i++) {
        put(s, i, CHUNK);
      }
      await(s);
      assertEquals(4, s.stats().entries());
      assertTrue(s.contains(key(0)));
      assertFalse(s.contains(key(1)));
      long fileBytes = CHUNK + ChunkFileHeader.BLOCK_BYTES;
      long onDisk = 0;
      for (Path f : files(DiskStore.SUFFIX)) {
        onDisk += Files.size(f);
      }
      assertEquals(4 * fileBytes, onDisk);
      assertEquals(2, s.stats().evictions());
    }
  }

  @Test
  void fullQueue_dropsPuts_withoutWaiting() throws Exception {
    io.writeGate = new CountDownLatch(1);
    try (DiskStore s = open(100, 1, 3, false, false)) {
      // Writes block until the gate opens, so a put that waited for the disk would never return.
      assertTimeoutPreemptively(
          Duration.ofSeconds(60),
          () -> {
            for (int i = 0; i < 10; i++) {
              put(s, i, CHUNK);
            }
          },
          "put waited for the disk");
      assertEquals(7, s.stats().droppedPuts());
      io.writeGate.countDown();
      await(s);
      assertEquals(3, s.stats().entries());
    }
  }

  @Test
  void prefetch_runsAheadOfQueuedPuts() throws Exception {
    try (DiskStore s = open(100, 1, 1024, false, false)) {
      put(s, 0, CHUNK);
      await(s);
      io.writeGate = new CountDownLatch(1);
      put(s, 1, CHUNK); // the single worker blocks on this write
      assertTrue(io.writesAtGate.tryAcquire(60, TimeUnit.SECONDS), "the worker took the write");
      put(s, 2, CHUNK); // queued
      put(s, 3, CHUNK); // queued
      List<ChunkKey> fetched = new java.util.concurrent.CopyOnWriteArrayList<>();
      s.prefetch(new ChunkKey[] {key(0)}, (k, b) -> fetched.add(k));
      io.log.clear();
      io.writeGate.countDown();
      await(s); // the prefetch runs on the same workers: done too
      assertEquals(List.of(key(0)), fetched);
      List<String> order = io.log.stream().filter(l -> !l.startsWith("delete")).toList();
      int readAt =
          order.indexOf(order.stream().filter(l -> l.startsWith("read")).findFirst().get());
      int write2 =
          order.indexOf(
              order.stream().filter(l -> l.startsWith("write")).skip(1).findFirst().get());
      assertTrue(readAt < write2, "prefetch must run before the queued puts: " + order);
    }
  }

  @Test
  void directIo_oddSizes_roundTrip() throws Exception {
    try (DiskStore s = open(100, 2, 1024, true, false)) {
      int[] sizes = {1, 4095, 4096, 4097, 50_000, CHUNK};
      for (int i = 0; i < sizes.length; i++) {
        put(s, i, sizes[i]);
      }
      await(s);
      for (int i = 0; i < sizes.length; i++) {
        assertHolds(s, i, sizes[i]);
      }
    }
  }

  @Test
  void lz4_compressesRepetitiveChunks_andKeepsRandomOnesRaw() throws Exception {
    try (DiskStore s = open(100, 1, 1024, true, true)) {
      ChunkBuffer b = pool.tryAllocate(CHUNK);
      for (int i = 0; i < CHUNK / 2; i++) {
        b.segment().setAtIndex(ValueLayout.JAVA_SHORT, i, (short) (0x3F80 + (i % 7))); // bf16-ish
      }
      byte[] expected = b.segment().toArray(ValueLayout.JAVA_BYTE);
      s.put(key(100), b);
      b.release();
      put(s, 101, CHUNK); // random bytes do not compress
      await(s);
      long[] written = s.bytesWritten();
      assertTrue(written[1] < written[0] * 0.6, "compressed: " + written[1] + " of " + written[0]);
      ChunkBuffer got = s.get(key(100));
      assertArrayEquals(expected, got.segment().toArray(ValueLayout.JAVA_BYTE));
      got.release();
      assertHolds(s, 101, CHUNK);
    }
  }

  @Test
  void getBatch_readsEveryChunk_andMissesAreNull() throws Exception {
    try (DiskStore s = open()) {
      for (int i = 0; i < 8; i++) {
        put(s, i, CHUNK);
      }
      await(s);
      ChunkKey[] keys = {key(0), key(1), key(99), key(7)};
      ChunkBuffer[] got = s.getBatch(keys);
      assertNull(got[2]);
      for (int i : new int[] {0, 1, 3}) {
        int k = i == 3 ? 7 : i;
        assertArrayEquals(content(k, CHUNK), got[i].segment().toArray(ValueLayout.JAVA_BYTE));
        got[i].release();
      }
    }
  }

  @Test
  void getBatch_handsEachChunkOver_onItsReaderThread_asItIsRead() throws Exception {
    try (DiskStore s = open()) {
      for (int i = 0; i < 8; i++) {
        put(s, i, CHUNK);
      }
      await(s);
      ChunkKey[] keys = {key(0), key(1), key(99), key(7)};
      Map<Integer, String> arrived = new java.util.concurrent.ConcurrentHashMap<>();
      ChunkBuffer[] got =
          s.getBatch(
              keys,
              (b, i) -> {
                // The buffer is the one the batch returns, readable while the others are read.
                int k = i == 3 ? 7 : i;
                assertArrayEquals(content(k, CHUNK), b.segment().toArray(ValueLayout.JAVA_BYTE));
                assertNull(arrived.put(i, Thread.currentThread().getName()), "handed over twice");
              });
      assertEquals(java.util.Set.of(0, 1, 3), arrived.keySet(), "each chunk read, once");
      arrived.values().forEach(t -> assertTrue(t.startsWith("kvtier-disk-read"), t));
      assertNull(got[2]);
      for (int i : new int[] {0, 1, 3}) {
        got[i].release();
      }
    }
  }

  @Test
  void getBatch_whoseHandOverThrows_failsWhole_andKeepsNoBuffer() throws Exception {
    try (DiskStore s = open()) {
      for (int i = 0; i < 4; i++) {
        put(s, i, CHUNK);
      }
      await(s);
      long inUse = pool.inUseSlots();
      ChunkKey[] keys = {key(0), key(1), key(2), key(3)};
      IllegalStateException e =
          assertThrows(
              IllegalStateException.class,
              () ->
                  s.getBatch(
                      keys,
                      (b, i) -> {
                        if (i == 2) {
                          throw new IllegalArgumentException("copy refused");
                        }
                      }));
      assertEquals("copy refused", e.getCause().getMessage());
      assertEquals(inUse, pool.inUseSlots(), "buffers leaked");
      // The chunks stay stored.
      ChunkBuffer[] again = s.getBatch(keys);
      for (ChunkBuffer b : again) {
        assertNotNull(b);
        b.release();
      }
    }
  }

  @Test
  void getBatch_thatGivesUp_returnsOnlyOnceNoHandOverRuns_andStartsNoneAfter() throws Exception {
    try (DiskStore s = open()) { // four readers
      for (int i = 0; i < 8; i++) {
        put(s, i, CHUNK);
      }
      await(s);
      ChunkKey[] keys = new ChunkKey[8];
      for (int i = 0; i < keys.length; i++) {
        keys[i] = key(i);
      }
      CountDownLatch slowStarted = new CountDownLatch(1);
      CountDownLatch never = new CountDownLatch(1);
      java.util.concurrent.atomic.AtomicBoolean slowEnded =
          new java.util.concurrent.atomic.AtomicBoolean();
      java.util.concurrent.atomic.AtomicBoolean returned =
          new java.util.concurrent.atomic.AtomicBoolean();
      List<Integer> late = new CopyOnWriteArrayList<>();
      assertThrows(
          IllegalStateException.class,
          () ->
              s.getBatch(
                  keys,
                  (b, i) -> {
                    if (returned.get()) {
                      late.add(i);
                    }
                    try {
                      if (i == 1) {
                        slowStarted.countDown();
                        never.await(200, TimeUnit.MILLISECONDS); // a long copy
                        slowEnded.set(true);
                      } else if (i == 0) {
                        assertTrue(slowStarted.await(60, TimeUnit.SECONDS));
                        throw new IllegalArgumentException("copy refused");
                      }
                    } catch (InterruptedException e) {
                      throw new IllegalStateException(e);
                    }
                  }));
      returned.set(true);
      assertTrue(slowEnded.get(), "returned while a hand-over was still copying");
      // Four hand-overs of a new batch, each waiting for the others: all four readers are past
      // the first batch's reads.
      CountDownLatch allReaders = new CountDownLatch(4);
      ChunkBuffer[] again =
          s.getBatch(
              new ChunkKey[] {key(4), key(5), key(6), key(7)},
              (b, i) -> {
                allReaders.countDown();
                try {
                  assertTrue(allReaders.await(60, TimeUnit.SECONDS), "a reader is still busy");
                } catch (InterruptedException e) {
                  throw new IllegalStateException(e);
                }
              });
      for (ChunkBuffer b : again) {
        b.release();
      }
      assertEquals(List.of(), late, "hand-overs of the first batch after it gave up");
    }
  }

  /** A store with one reader, one writer and room for {@code readQueue} waiting reads. */
  DiskStore openWithReadQueue(int readQueue) {
    return new DiskStore(
        new DiskStore.Settings(
            List.of(dir),
            DiskSharding.BY_GPU,
            100 * (CHUNK + 2L * ChunkFileHeader.BLOCK_BYTES),
            false,
            false,
            1,
            1,
            1024,
            readQueue),
        pool::tryAllocate,
        io);
  }

  /** Waits, yielding, until {@code s} counted {@code n} backlog errors; fails after a minute. */
  static void awaitBacklog(DiskStore s, long n) {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    while (s.errorCounts().getOrDefault(ErrorKind.BACKLOG, 0L) < n) {
      assertTrue(System.nanoTime() < deadline, "refusals not counted: " + s.errorCounts());
      Thread.yield();
    }
  }

  @Test
  void getBatch_fullReadQueue_refusesAtOnce_asCountedMisses() throws Exception {
    var callers = Executors.newFixedThreadPool(2);
    try (DiskStore s = openWithReadQueue(2)) {
      for (int i = 0; i < 6; i++) {
        put(s, i, CHUNK);
      }
      await(s);
      io.readGate = new CountDownLatch(1);
      CompletableFuture<ChunkBuffer[]> first =
          CompletableFuture.supplyAsync(() -> s.getBatch(new ChunkKey[] {key(0)}), callers);
      assertTrue(io.readsAtGate.tryAcquire(60, TimeUnit.SECONDS), "the only reader is held");
      long missesBefore = s.stats().misses();
      ChunkKey[] keys = {key(1), key(2), key(3), key(4), key(5)};
      CompletableFuture<ChunkBuffer[]> second =
          CompletableFuture.supplyAsync(() -> s.getBatch(keys), callers);
      // Two reads wait in the queue; the other three are refused while every read is held at the
      // gate: a caller that waited for queue space (or ran the read itself) would never get here.
      awaitBacklog(s, 3);
      assertEquals(missesBefore + 3, s.stats().misses(), "each refused read is a miss");
      io.readGate.countDown();
      ChunkBuffer[] got = second.get(60, TimeUnit.SECONDS);
      assertArrayEquals(content(1, CHUNK), got[0].segment().toArray(ValueLayout.JAVA_BYTE));
      assertArrayEquals(content(2, CHUNK), got[1].segment().toArray(ValueLayout.JAVA_BYTE));
      assertNull(got[2]);
      assertNull(got[3]);
      assertNull(got[4]);
      got[0].release();
      got[1].release();
      ChunkBuffer[] one = first.get(60, TimeUnit.SECONDS);
      assertArrayEquals(content(0, CHUNK), one[0].segment().toArray(ValueLayout.JAVA_BYTE));
      one[0].release();
      assertEquals(3L, s.errorCounts().get(ErrorKind.BACKLOG));
      assertTrue(s.contains(key(3)), "a refused read leaves the chunk stored");
      assertHolds(s, 3, CHUNK);
    } finally {
      callers.shutdownNow();
    }
  }

  @Test
  void prefetch_beyondTheReadQueue_isNotQueued_andCounted() throws Exception {
    try (DiskStore s = openWithReadQueue(2)) {
      for (int i = 0; i < 5; i++) {
        put(s, i, CHUNK);
      }
      await(s);
      io.writeGate = new CountDownLatch(1);
      put(s, 9, CHUNK); // the single worker blocks on this write
      assertTrue(io.writesAtGate.tryAcquire(60, TimeUnit.SECONDS), "the worker took the write");
      List<ChunkKey> fetched = new CopyOnWriteArrayList<>();
      ChunkKey[] keys = {key(0), key(1), key(2), key(3), key(4)};
      assertEquals(2, s.prefetch(keys, (k, b) -> fetched.add(k)));
      assertEquals(3L, s.errorCounts().get(ErrorKind.BACKLOG));
      io.writeGate.countDown();
      await(s);
      assertEquals(List.of(key(0), key(1)), fetched);
      assertEquals(2, s.prefetch(new ChunkKey[] {key(3), key(4)}, (k, b) -> fetched.add(k)));
      await(s);
      assertEquals(4, fetched.size(), "the queue takes prefetches again once drained");
    }
  }
}
