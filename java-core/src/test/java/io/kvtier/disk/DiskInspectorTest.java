package io.kvtier.disk;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.DiskSharding;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import java.io.RandomAccessFile;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A disk tier's directory as the {@code kvtier disk} commands see it, written by a real tier. */
public class DiskInspectorTest {
  static final int CHUNK = 64 * 1024;

  @TempDir Path dir;
  ChunkPool pool;

  @BeforeEach
  void setUp() {
    pool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK, 64L * CHUNK, 1 << 22);
  }

  @AfterEach
  void tearDown() {
    pool.close();
  }

  /**
   * Writes {@code perNamespace} chunks into each of namespaces 5 and 6 (LZ4 on: half the chunks are
   * compressible and stored compressed) through a real disk tier, and closes it.
   */
  public static List<Path> fill(Path dir, ChunkPool pool, int perNamespace) throws Exception {
    DiskStore s =
        new DiskStore(
            new DiskStore.Settings(
                List.of(dir), DiskSharding.BY_GPU, 1L << 30, false, true, 2, 2, 1024),
            pool::tryAllocate,
            NioDiskIo.INSTANCE);
    List<Path> files = new ArrayList<>();
    try {
      for (long ns : new long[] {5, 6}) {
        for (int i = 0; i < perNamespace; i++) {
          ChunkKey key = new ChunkKey(ns, 100 * ns + i, 7 * i + 1);
          ChunkBuffer b = pool.tryAllocate(CHUNK);
          byte[] bytes = new byte[CHUNK];
          if (i % 2 == 0) {
            new Random(i).nextBytes(bytes);
          }
          MemorySegment.copy(bytes, 0, b.segment(), ValueLayout.JAVA_BYTE, 0, CHUNK);
          s.put(key, b);
          b.release();
          files.add(s.pathOf(key));
        }
      }
      assertTrue(s.awaitIdle(60_000), "writes did not finish");
    } finally {
      s.close();
    }
    return files;
  }

  @Test
  void summarizesByNamespaceAndCountsPartialAndForeignFiles() throws Exception {
    List<Path> files = fill(dir, pool, 3);
    Files.writeString(files.get(0).resolveSibling("x.kvc.1234.tmp"), "partial");
    Files.writeString(dir.resolve("notes.txt"), "not kvtier's");
    DiskInspector.Summary s = DiskInspector.summarize(dir);
    assertEquals(2, s.namespaces().size());
    assertEquals("0000000000000005", s.namespaces().get(0).id());
    assertEquals(3, s.namespaces().get(0).chunks());
    assertEquals(6, s.chunks());
    long bytes = 0;
    for (Path f : files) {
      bytes += Files.size(f);
    }
    assertEquals(bytes, s.bytes());
    assertTrue(s.namespaces().get(0).oldestMillis() <= s.namespaces().get(0).newestMillis());
    assertEquals(1, s.partialFiles());
    assertEquals(List.of(dir.resolve("notes.txt")), s.foreign());
  }

  @Test
  void verifyFindsEveryDamagedFileAndDeletesOnlyThoseWhenAsked() throws Exception {
    List<Path> files = fill(dir, pool, 4);
    assertEquals(List.of(), DiskInspector.verify(dir, false, n -> {}), "a clean tier");
    Path flipped = files.get(0); // raw (random bytes)
    Path lz4 = files.get(1); // compressed
    Path cut = files.get(2);
    Path moved = files.get(3);
    flipByte(flipped, 4096 + 100);
    flipByte(lz4, 4096 + 10);
    try (RandomAccessFile f = new RandomAccessFile(cut.toFile(), "rw")) {
      f.setLength(f.length() - 4096);
    }
    Path elsewhere = files.get(4).resolveSibling(moved.getFileName());
    Files.move(moved, elsewhere);
    Path partial = files.get(5).resolveSibling("y.kvc.99.tmp");
    Files.writeString(partial, "partial");
    long[] progress = {0};
    List<DiskInspector.Problem> found = DiskInspector.verify(dir, false, n -> progress[0] = n);
    assertEquals(8 + 1, progress[0], "every file is checked once");
    List<Path> bad = found.stream().map(DiskInspector.Problem::file).sorted().toList();
    assertEquals(
        List.of(flipped, lz4, cut, elsewhere, partial).stream().sorted().toList(),
        bad,
        found.toString());
    for (DiskInspector.Problem p : found) {
      assertFalse(p.reason().isBlank());
      assertTrue(Files.exists(p.file()), "nothing deleted without --delete");
    }
    assertEquals(5, DiskInspector.verify(dir, true, n -> {}).size());
    for (Path p : bad) {
      assertFalse(Files.exists(p), p + " deleted");
    }
    assertEquals(List.of(), DiskInspector.verify(dir, false, n -> {}), "what is left is sound");
    assertEquals(8 - 4, DiskInspector.summarize(dir).chunks());
  }

  @Test
  void clearDeletesOneNamespaceOrAllOfKvtiersFilesAndNothingElse() throws Exception {
    List<Path> files = fill(dir, pool, 2);
    Files.writeString(dir.resolve("notes.txt"), "not kvtier's");
    Files.writeString(files.get(0).resolveSibling("x.kvc.1.tmp"), "partial of namespace 5");
    long ns5 =
        Files.size(files.get(0)) + Files.size(files.get(1)) + "partial of namespace 5".length();
    assertArrayEquals(new long[] {3, ns5}, DiskInspector.clear(dir, "0000000000000005"));
    DiskInspector.Summary s = DiskInspector.summarize(dir);
    assertEquals(1, s.namespaces().size());
    assertEquals("0000000000000006", s.namespaces().getFirst().id());
    assertEquals(0, s.partialFiles());
    assertEquals(2, DiskInspector.clear(dir, null)[0]);
    assertEquals(0, DiskInspector.summarize(dir).chunks());
    assertTrue(Files.exists(dir.resolve("notes.txt")), "not kvtier's: left alone");
  }

  @Test
  void aDirectoryThatIsNotThereIsSaid() {
    assertThrows(NoSuchFileException.class, () -> DiskInspector.summarize(dir.resolve("none")));
    assertThrows(
        NoSuchFileException.class, () -> DiskInspector.verify(dir.resolve("none"), false, n -> {}));
  }

  public static void flipByte(Path file, long at) throws Exception {
    try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
      f.seek(at);
      int b = f.read();
      f.seek(at);
      f.write(b ^ 0xFF);
    }
  }
}
