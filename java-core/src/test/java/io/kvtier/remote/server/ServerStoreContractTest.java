package io.kvtier.remote.server;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.server.CacheServer;
import io.kvtier.store.KvStore;
import io.kvtier.store.KvStoreContract;
import org.junit.jupiter.api.AfterEach;

/** The store contract against a real kvtier cache server on a loopback port. */
class ServerStoreContractTest extends KvStoreContract {
  CacheServer server;
  ChunkPool readPool;

  @Override
  protected KvStore newStore() {
    try {
      server =
          new CacheServer(
              new CacheServer.Settings(
                  "127.0.0.1", 0, 1024L * CHUNK_BYTES, CHUNK_BYTES, null, 0, null, 2));
    } catch (InterruptedException e) {
      throw new IllegalStateException(e);
    }
    readPool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 32L * CHUNK_BYTES, 1 << 20);
    return new ServerStore(
        "kvtier://127.0.0.1:" + server.port(), 2000, 1024, CHUNK_BYTES, readPool::tryAllocate);
  }

  @Override
  protected boolean sendsPutsBlind() {
    return true;
  }

  @Override
  protected boolean evictsWhenFilled() {
    return false; // the server holds 1024 chunks
  }

  @Override
  protected void assertNothingHeld() {
    if (readPool != null) {
      assertEquals(0, readPool.inUseSlots(), "the client leaked read buffers");
      readPool.close();
    }
  }

  @AfterEach
  void stopServer() {
    if (server != null) {
      server.close();
    }
  }
}
