package io.kvtier.disk;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.kvtier.config.DiskSharding;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.store.ErrorKind;
import java.io.IOException;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Disk full and read-only on a real file system: a 1 MiB tmpfs mounted for the test. Needs root (or
 * CAP_SYS_ADMIN) to mount; skipped with that reason otherwise. {@link DiskStoreTest} covers the
 * same paths everywhere through injected faults.
 */
class DiskRealFaultsTest {
  static final int CHUNK = 64 * 1024;

  Path mnt;
  ChunkPool pool;

  static boolean run(String... cmd) throws IOException, InterruptedException {
    Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
    p.getInputStream().readAllBytes();
    return p.waitFor(30, TimeUnit.SECONDS) && p.exitValue() == 0;
  }

  @BeforeEach
  void mount() throws Exception {
    mnt = Files.createTempDirectory("kvtier-tmpfs");
    boolean mounted = run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt.toString());
    assumeTrue(mounted, "mounting a small tmpfs needs root; fault paths are covered by injection");
    pool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK, 64L * CHUNK, 1 << 22);
  }

  @AfterEach
  void unmount() throws Exception {
    if (pool != null) {
      assertEquals(0, pool.inUseSlots());
      pool.close();
      run("umount", mnt.toString());
    }
    Files.deleteIfExists(mnt);
  }

  DiskStore open() {
    return new DiskStore(
        new DiskStore.Settings(
            List.of(mnt.resolve("kv")), DiskSharding.BY_GPU, 1L << 30, false, false, 1, 1, 64),
        pool::tryAllocate,
        NioDiskIo.INSTANCE);
  }

  void put(DiskStore s, int i) {
    ChunkBuffer b = pool.tryAllocate(CHUNK);
    b.segment().fill((byte) i);
    s.put(new ChunkKey(1, i, i), b);
    b.release();
  }

  long tempFiles() throws IOException {
    try (Stream<Path> s = Files.walk(mnt)) {
      return s.filter(p -> p.toString().endsWith(NioDiskIo.TEMP_SUFFIX)).count();
    }
  }

  @Test
  void realDiskSmallerThanTheBudget_keepsTheNewest_byEvicting_likeItsOwnBudget() throws Exception {
    try (DiskStore s = open()) { // a 1 GiB budget on a 1 MiB file system
      for (int i = 0; i < 30; i++) { // 30 x 68 KiB > 1 MiB
        put(s, i);
        assertTrue(s.awaitIdle(60_000));
      }
      long stored = s.stats().entries();
      assertTrue(stored > 0 && stored < 30, "some fit, some do not: " + stored);
      assertEquals(0, s.stats().droppedPuts(), "every save made room for itself");
      for (int i = 27; i < 30; i++) {
        assertTrue(s.contains(new ChunkKey(1, i, i)), "the newest are kept: " + i);
      }
      assertTrue(s.stats().evictions() >= 30 - stored, "the oldest were evicted");
      assertEquals(0, tempFiles(), "failed writes leave no temporary files");
      for (int i = 0; i < 30; i++) {
        ChunkKey k = new ChunkKey(1, i, i);
        if (s.contains(k)) {
          ChunkBuffer b = s.get(k);
          assertNotNull(b);
          byte[] expected = new byte[CHUNK];
          java.util.Arrays.fill(expected, (byte) i);
          assertArrayEquals(expected, b.segment().toArray(ValueLayout.JAVA_BYTE));
          b.release();
        }
      }
    }
  }

  @Test
  void realReadOnlyRemount_dropsAndCounts_readsStillWork() throws Exception {
    try (DiskStore s = open()) {
      put(s, 1);
      assertTrue(s.awaitIdle(60_000));
      assumeTrue(run("mount", "-o", "remount,ro", mnt.toString()), "remount read-only refused");
      put(s, 2);
      put(s, 3);
      assertTrue(s.awaitIdle(60_000));
      assertEquals(2L, s.errorCounts().get(ErrorKind.READ_ONLY), s.errorCounts().toString());
      assertFalse(s.contains(new ChunkKey(1, 2, 2)));
      ChunkBuffer b = s.get(new ChunkKey(1, 1, 1));
      assertNotNull(b, "chunks stored before the remount stay readable");
      b.release();
    }
  }
}
