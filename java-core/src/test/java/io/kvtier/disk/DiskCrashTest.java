package io.kvtier.disk;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.DiskSharding;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** A writer process killed with SIGKILL mid-write leaves only whole, correct chunks behind. */
class DiskCrashTest {
  @TempDir Path dir;

  private long chunkFiles() throws Exception {
    try (Stream<Path> s = Files.walk(dir)) {
      return s.filter(p -> p.toString().endsWith(DiskStore.SUFFIX)).count();
    }
  }

  @Test
  @Timeout(value = 5, unit = TimeUnit.MINUTES, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
  void sigkillMidWrite_thenRestart_everyVisibleChunkIsCorrect() throws Exception {
    Path java = Path.of(System.getProperty("java.home"), "bin", "java");
    Process p =
        new ProcessBuilder(
                java.toString(),
                "-Xrs",
                "--enable-native-access=ALL-UNNAMED",
                "-cp",
                System.getProperty("java.class.path"),
                CrashWriterMain.class.getName(),
                dir.toString())
            .redirectErrorStream(true)
            .start();
    try (BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream()))) {
      assertEquals("ready", out.readLine());
      String stored = out.readLine(); // the writer keeps writing after this line
      assertEquals("stored " + CrashWriterMain.FIRST_CHUNKS, stored, "the writer's first chunks");
      p.destroyForcibly(); // SIGKILL: writes in flight are cut off
      assertTrue(p.waitFor(60, TimeUnit.SECONDS));
    } finally {
      p.destroyForcibly(); // also when a line never came (the test timed out) or was wrong
    }
    assertEquals(137, p.exitValue(), "the writer must have died of SIGKILL");
    assertTrue(chunkFiles() >= CrashWriterMain.FIRST_CHUNKS, "the files of the first chunks");

    try (ChunkPool pool =
            new ChunkPool(
                MmapAllocator.INSTANCE,
                CrashWriterMain.CHUNK,
                4L * CrashWriterMain.CHUNK,
                1 << 22);
        DiskStore s =
            new DiskStore(
                new DiskStore.Settings(
                    List.of(dir), DiskSharding.BY_GPU, 1L << 34, false, false, 1, 1, 8),
                pool::tryAllocate,
                NioDiskIo.INSTANCE)) {
      long entries = s.stats().entries();
      assertTrue(
          entries >= CrashWriterMain.FIRST_CHUNKS,
          "chunks written before the kill must survive: " + entries);
      int checked = 0;
      for (int c = 0; checked < entries && c < 100_000; c++) {
        ChunkKey k = new ChunkKey(3, c, c);
        if (!s.contains(k)) {
          continue;
        }
        ChunkBuffer b = s.get(k);
        assertTrue(b != null, "visible chunk " + c + " unreadable");
        for (int i = 0; i < CrashWriterMain.CHUNK / 8; i++) {
          if (b.segment().getAtIndex(ValueLayout.JAVA_LONG, i) != CrashWriterMain.word(c, i)) {
            b.release();
            throw new AssertionError("chunk " + c + " has a wrong word at " + i);
          }
        }
        b.release();
        checked++;
      }
      assertEquals(entries, checked);
      try (Stream<Path> files = Files.walk(dir)) {
        assertEquals(
            0,
            files.filter(f -> f.toString().endsWith(NioDiskIo.TEMP_SUFFIX)).count(),
            "temporary files of cut-off writes are removed at start-up");
      }
      assertEquals(0, pool.inUseSlots());
    }
  }
}
