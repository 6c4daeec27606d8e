package io.kvtier.disk;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.kvtier.config.DiskSharding;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.store.KvStore;
import io.kvtier.store.KvStoreContract;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.io.TempDir;

/** The store contract for the disk tier: buffered I/O, O_DIRECT, LZ4, two striped paths. */
class DiskStoreContractTest {
  abstract static class DiskContract extends KvStoreContract {
    @TempDir Path dir;
    ChunkPool readPool;

    abstract boolean direct();

    abstract boolean lz4();

    List<Path> dirs() {
      return List.of(dir);
    }

    @Override
    protected KvStore newStore() {
      readPool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 32L * CHUNK_BYTES, 1 << 20);
      long fileBytes = CHUNK_BYTES + 2L * ChunkFileHeader.BLOCK_BYTES;
      return new DiskStore(
          new DiskStore.Settings(
              dirs(),
              DiskSharding.STRIPED,
              CAPACITY_CHUNKS * fileBytes,
              direct(),
              lz4(),
              2,
              4,
              1024),
          readPool::tryAllocate,
          NioDiskIo.INSTANCE);
    }

    @Override
    protected void assertNothingHeld() {
      if (readPool != null) {
        assertEquals(0, readPool.inUseSlots(), "the disk store leaked read buffers");
        readPool.close();
      }
    }
  }

  @Nested
  class Buffered extends DiskContract {
    @Override
    boolean direct() {
      return false;
    }

    @Override
    boolean lz4() {
      return false;
    }
  }

  @Nested
  class Direct extends DiskContract {
    @Override
    boolean direct() {
      return true;
    }

    @Override
    boolean lz4() {
      return false;
    }
  }

  @Nested
  class DirectLz4 extends DiskContract {
    @Override
    boolean direct() {
      return true;
    }

    @Override
    boolean lz4() {
      return true;
    }
  }

  @Nested
  class TwoPathsStriped extends DiskContract {
    @Override
    boolean direct() {
      return false;
    }

    @Override
    boolean lz4() {
      return false;
    }

    @Override
    List<Path> dirs() {
      return List.of(dir.resolve("nvme0"), dir.resolve("nvme1"));
    }
  }
}
