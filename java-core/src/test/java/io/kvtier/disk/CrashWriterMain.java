package io.kvtier.disk;

import io.kvtier.config.DiskSharding;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.List;

/**
 * Run in a child JVM by {@link DiskCrashTest}: writes chunks whose bytes follow from their index,
 * forever, until killed with SIGKILL. Prints {@code ready} once the store is open, then {@code
 * stored N} once the first {@link #FIRST_CHUNKS} puts have been written (N chunks visible), and
 * goes on writing.
 */
public final class CrashWriterMain {
  private CrashWriterMain() {}

  static final int CHUNK = 256 * 1024;

  /** Chunks written and waited for before {@code stored N} is printed. */
  static final int FIRST_CHUNKS = 40;

  /** How long the writer waits for its disk writes before giving up, in milliseconds. */
  private static final long AWAIT_MILLIS = 60_000;

  static long word(int chunk, int i) {
    return chunk * 0x9E3779B97F4A7C15L + i * 0xBF58476D1CE4E5B9L;
  }

  public static void main(String[] args) throws Exception {
    Path dir = Path.of(args[0]);
    ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK, 64L * CHUNK, 1 << 24);
    DiskStore s =
        new DiskStore(
            new DiskStore.Settings(
                List.of(dir), DiskSharding.BY_GPU, 1L << 34, false, false, 4, 2, 64),
            pool::tryAllocate,
            NioDiskIo.INSTANCE);
    System.out.println("ready");
    System.out.flush();
    for (int c = 0; ; c++) {
      if (c == FIRST_CHUNKS) {
        idle(s);
        System.out.println("stored " + s.stats().puts());
        System.out.flush();
      }
      ChunkBuffer b = pool.tryAllocate(CHUNK);
      if (b == null) { // every slot is held by a queued write: let the queue drain
        idle(s);
        c--;
        continue;
      }
      for (int i = 0; i < CHUNK / 8; i++) {
        b.segment().setAtIndex(ValueLayout.JAVA_LONG, i, word(c, i));
      }
      s.put(new ChunkKey(3, c, c), b);
      b.release();
    }
  }

  private static void idle(DiskStore s) throws InterruptedException {
    if (!s.awaitIdle(AWAIT_MILLIS)) {
      System.out.println("disk writes stuck");
      System.exit(1);
    }
  }
}
