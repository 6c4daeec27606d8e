package io.kvtier.remote.redis;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.store.ErrorKind;
import io.kvtier.store.KvStore;
import io.kvtier.store.KvStoreContract;
import io.kvtier.testing.Await;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.TestInstance;

/**
 * The store contract against real Redis: one standalone server and a 3-node cluster. Each test
 * skips, saying why, where {@code redis-server} is not installed.
 */
class RedisStoreContractTest {
  abstract static class RedisContract extends KvStoreContract {
    ChunkPool readPool;

    abstract String url();

    @Override
    protected KvStore newStore() {
      RedisServers.assumeInstalled(); // each test reports the skip and its reason
      readPool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 32L * CHUNK_BYTES, 1 << 20);
      RedisStore s = new RedisStore(url(), 2000, 0, 1024, readPool::tryAllocate);
      s.getBatch(new io.kvtier.key.ChunkKey[0]); // connected or not, never throws
      return s;
    }

    @Override
    protected boolean sendsPutsBlind() {
      return true;
    }

    @Override
    protected boolean evictsWhenFilled() {
      return false; // no maxmemory: the server keeps everything
    }

    @Override
    protected void assertNothingHeld() {
      if (readPool != null) {
        assertEquals(0, readPool.inUseSlots(), "the remote store leaked read buffers");
        readPool.close();
      }
    }
  }

  @Nested
  @TestInstance(TestInstance.Lifecycle.PER_CLASS)
  class Standalone extends RedisContract {
    Process server;
    int port;

    @BeforeAll
    void startServer() throws Exception {
      if (!RedisServers.installed()) {
        return; // every test skips in newStore, saying why
      }
      port = RedisServers.freePort();
      server = RedisServers.start(port, Files.createTempDirectory("redis"));
    }

    @AfterAll
    void stopServer() throws Exception {
      RedisServers.stop(server);
    }

    @Override
    String url() {
      return "redis://127.0.0.1:" + port;
    }

    @Override
    protected KvStore newStore() {
      RedisServers.assumeInstalled();
      try {
        RedisServers.run("redis-cli", "-p", Integer.toString(port), "FLUSHALL");
      } catch (Exception e) {
        throw new IllegalStateException(e);
      }
      return super.newStore();
    }
  }

  @Nested
  @TestInstance(TestInstance.Lifecycle.PER_CLASS)
  class Cluster extends RedisContract {
    final List<Process> servers = new ArrayList<>();
    final List<Integer> ports = new ArrayList<>();

    @BeforeAll
    void startCluster() throws Exception {
      if (!RedisServers.installed()) {
        return; // every test skips in newStore, saying why
      }
      Path dir = Files.createTempDirectory("redis-cluster");
      List<String> create = new ArrayList<>(List.of("redis-cli", "--cluster", "create"));
      for (int i = 0; i < 3; i++) {
        int port = RedisServers.freePort();
        Path node = Files.createDirectories(dir.resolve("n" + i));
        servers.add(
            RedisServers.start(
                port,
                node,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000"));
        ports.add(port);
        create.add("127.0.0.1:" + port);
      }
      create.addAll(List.of("--cluster-replicas", "0", "--cluster-yes"));
      RedisServers.run(create.toArray(new String[0]));
      // The nodes agree on the slot map by gossip, on their own schedule.
      Await.until(
          "the cluster to become ready",
          () ->
              RedisServers.run("redis-cli", "-p", ports.get(0).toString(), "CLUSTER", "INFO")
                  .contains("cluster_state:ok"));
    }

    @AfterAll
    void stopCluster() throws Exception {
      for (Process p : servers) {
        RedisServers.stop(p);
      }
    }

    /** Keys of a 6-chunk prompt as the engine makes them (they carry the prompt's root). */
    io.kvtier.key.ChunkKey[] promptKeys() {
      int[] tokens = new int[6 * 16];
      for (int i = 0; i < tokens.length; i++) {
        tokens[i] = 1000 + i * 7;
      }
      return io.kvtier.key.ChunkHasher.keys(42, tokens, tokens.length, 16, false, 100);
    }

    /**
     * Stores the prompt's chunks through {@code s}, reads them back in one batch byte for byte, and
     * returns how many keys each node holds, smallest first.
     */
    List<Long> storeAndCountPerNode(KvStore s, io.kvtier.key.ChunkKey[] keys) throws Exception {
      byte[][] expected = new byte[keys.length][];
      for (int c = 0; c < keys.length; c++) {
        ChunkBuffer b = chunk(100 + c, CHUNK_BYTES);
        expected[c] = bytesOf(b);
        org.junit.jupiter.api.Assertions.assertTrue(s.put(keys[c], b));
        b.release();
      }
      org.junit.jupiter.api.Assertions.assertTrue(s.awaitIdle(AWAIT_MILLIS), "puts in flight");
      ChunkBuffer[] got = s.getBatch(keys);
      for (int c = 0; c < keys.length; c++) {
        org.junit.jupiter.api.Assertions.assertArrayEquals(expected[c], bytesOf(got[c]));
        got[c].release();
      }
      List<Long> perNode = new ArrayList<>();
      for (int p : ports) {
        perNode.add(
            Long.parseLong(
                RedisServers.run("redis-cli", "-p", Integer.toString(p), "DBSIZE").trim()));
      }
      perNode.sort(null);
      return perNode;
    }

    /**
     * Hash tags: every chunk of a prompt (keys from {@code ChunkHasher}, which carry the prompt's
     * root) lands on one node, and the prompt's batched get is served from it.
     */
    @org.junit.jupiter.api.Test
    void aPromptsChunksLiveOnOneNode() throws Exception {
      io.kvtier.key.ChunkKey[] keys = promptKeys();
      assertEquals(List.of(0L, 0L, (long) keys.length), storeAndCountPerNode(store, keys));
      // the tag is the namespace and the root; the key without a root is tagged by its own hash
      String k = new String(RedisStore.redisKey(keys[3], true), StandardCharsets.US_ASCII);
      assertEquals(
          "kvtier:{000000000000002a:"
              + String.format("%016x", keys[0].h1())
              + "}:"
              + keys[3].hashHex(),
          k);
      assertEquals(
          "kvtier:000000000000002a:" + keys[3].hashHex(),
          new String(RedisStore.redisKey(keys[3], false), StandardCharsets.US_ASCII));
    }

    /** {@code remote_hash_tags=false}: the same prompt's chunks spread over the nodes. */
    @org.junit.jupiter.api.Test
    void withoutHashTagsAPromptsChunksSpread() throws Exception {
      io.kvtier.key.ChunkKey[] keys = promptKeys();
      try (RedisStore untagged =
          new RedisStore(url(), 2000, 0, 1024, false, readPool::tryAllocate)) {
        List<Long> perNode = storeAndCountPerNode(untagged, keys);
        assertEquals(keys.length, perNode.stream().mapToLong(Long::longValue).sum());
        org.junit.jupiter.api.Assertions.assertTrue(
            perNode.get(1) > 0, "keys on at least two nodes: " + perNode);
        // the tagged store does not find what the untagged one wrote
        ChunkBuffer[] got = store.getBatch(keys);
        for (ChunkBuffer b : got) {
          org.junit.jupiter.api.Assertions.assertNull(b);
        }
      }
    }

    String cli(int port, String... args) throws Exception {
      List<String> cmd = new ArrayList<>(List.of("redis-cli", "-p", Integer.toString(port)));
      cmd.addAll(List.of(args));
      return RedisServers.run(cmd.toArray(new String[0])).trim();
    }

    /**
     * A slot moves to another node while the store holds the old map: the old owner answers MOVED,
     * those GETs are counted misses, the map is reloaded, and later GETs find every byte.
     */
    @org.junit.jupiter.api.Test
    void aMovedSlotIsAMissThenFoundAtItsNewNode() throws Exception {
      io.kvtier.key.ChunkKey[] keys = promptKeys();
      storeAndCountPerNode(store, keys);
      byte[][] expected = new byte[keys.length][];
      for (int c = 0; c < keys.length; c++) {
        ChunkBuffer b = chunk(100 + c, CHUNK_BYTES); // the bytes storeAndCountPerNode stored
        expected[c] = bytesOf(b);
        b.release();
      }
      String key0 = new String(RedisStore.redisKey(keys[0], true), StandardCharsets.US_ASCII);
      int slot = Integer.parseInt(cli(ports.get(0), "CLUSTER", "KEYSLOT", key0));
      int from = -1;
      for (int p : ports) {
        if (!cli(p, "CLUSTER", "COUNTKEYSINSLOT", Integer.toString(slot)).equals("0")) {
          from = p;
        }
      }
      int to = ports.get(0) == from ? ports.get(1) : ports.get(0);
      String fromId = cli(from, "CLUSTER", "MYID");
      String toId = cli(to, "CLUSTER", "MYID");
      cli(to, "CLUSTER", "SETSLOT", Integer.toString(slot), "IMPORTING", fromId);
      cli(from, "CLUSTER", "SETSLOT", Integer.toString(slot), "MIGRATING", toId);
      List<String> migrate =
          new ArrayList<>(List.of("MIGRATE", "127.0.0.1", Integer.toString(to), "", "0", "5000"));
      migrate.add("KEYS");
      migrate.addAll(
          List.of(
              cli(from, "CLUSTER", "GETKEYSINSLOT", Integer.toString(slot), "100").split("\n")));
      assertEquals("OK", cli(from, migrate.toArray(new String[0])));
      for (int p : ports) {
        cli(p, "CLUSTER", "SETSLOT", Integer.toString(slot), "NODE", toId);
      }

      long missesBefore = store.stats().misses();
      ChunkBuffer[] stale = store.getBatch(keys);
      for (ChunkBuffer b : stale) {
        org.junit.jupiter.api.Assertions.assertNull(b, "the old owner answers MOVED: a miss");
      }
      assertEquals(missesBefore + keys.length, store.stats().misses());
      assertEquals(
          (long) keys.length,
          ((RedisStore) store).errorCounts().get(ErrorKind.MOVED),
          "counted as moved");
      // The MOVED replies started a reload of the slot map in the background.
      ChunkBuffer[] got =
          Await.value(
              "the GETs to find the moved slot's new node",
              () -> {
                ChunkBuffer[] batch = store.getBatch(keys);
                if (batch[0] != null) {
                  return batch;
                }
                for (ChunkBuffer b : batch) {
                  if (b != null) {
                    b.release();
                  }
                }
                return null;
              },
              () -> ((RedisStore) store).errorCounts().toString());
      for (int c = 0; c < keys.length; c++) {
        org.junit.jupiter.api.Assertions.assertNotNull(got[c], "found after the map reload");
        org.junit.jupiter.api.Assertions.assertArrayEquals(expected[c], bytesOf(got[c]));
        got[c].release();
      }
    }

    @Override
    String url() {
      return "redis-cluster://127.0.0.1:"
          + ports.get(0)
          + ",127.0.0.1:"
          + ports.get(1)
          + ",127.0.0.1:"
          + ports.get(2);
    }

    @Override
    protected KvStore newStore() {
      RedisServers.assumeInstalled();
      try {
        for (int p : ports) {
          RedisServers.run("redis-cli", "-p", Integer.toString(p), "FLUSHALL");
        }
      } catch (Exception e) {
        throw new IllegalStateException(e);
      }
      return super.newStore();
    }
  }
}
