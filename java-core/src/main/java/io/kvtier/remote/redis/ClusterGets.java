package io.kvtier.remote.redis;

import io.kvtier.memory.ChunkBuffer;
import io.lettuce.core.RedisURI;
import io.lettuce.core.cluster.SlotHash;
import io.lettuce.core.cluster.models.partitions.Partitions;
import io.lettuce.core.cluster.models.partitions.RedisClusterNode;
import io.netty.channel.EventLoopGroup;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.function.LongFunction;
import java.util.function.Supplier;

/**
 * Pipelined {@code GET}s on a Redis cluster (plain TCP) whose values land in pinned buffers with no
 * copy in user space, as on a standalone server: each key goes to the master serving its slot,
 * through one {@link RespGetClient} per node. With hash tags a prompt's keys share a slot, so its
 * batch is one pipeline to one node.
 *
 * <p>The slot map is Lettuce's (the cluster client's partitions). A node that no longer serves a
 * slot answers {@code MOVED} (or {@code ASK} while the slot migrates): that GET fails (a counted
 * miss) and the map is reloaded in the background, so later GETs go to the new owner. Connecting,
 * back-off, deadlines, the bound on outstanding replies and the release of late replies are each
 * node client's own ({@link io.kvtier.wire.PipelinedConnection}); a node that cannot be reached or
 * refuses a batch fails only its keys. Thread-safe.
 */
final class ClusterGets implements AutoCloseable {
  private final Supplier<Partitions> partitions;
  private final Runnable reloadSlots;
  private final List<byte[][]> handshake;
  private final long timeoutMillis;
  private final LongFunction<ChunkBuffer> buffers;
  private final EventLoopGroup group = RespGetClient.newGroup(1);
  private final Map<String, RespGetClient> nodes = new ConcurrentHashMap<>();

  /**
   * @param partitions the current slot map
   * @param reloadSlots asks for the slot map to be reloaded (returns at once)
   * @param handshake commands for each new node connection ({@code AUTH})
   */
  ClusterGets(
      Supplier<Partitions> partitions,
      Runnable reloadSlots,
      List<byte[][]> handshake,
      long timeoutMillis,
      LongFunction<ChunkBuffer> buffers) {
    this.partitions = partitions;
    this.reloadSlots = reloadSlots;
    this.handshake = List.copyOf(handshake);
    this.timeoutMillis = timeoutMillis;
    this.buffers = buffers;
  }

  /**
   * Sends {@code GET key} for every key to the node serving its slot and returns the replies in
   * order, as {@link RespGetClient#get}. A node that cannot be reached fails its keys' futures
   * only.
   */
  List<CompletableFuture<ChunkBuffer>> get(byte[][] keys) {
    Partitions map = partitions.get();
    List<CompletableFuture<ChunkBuffer>> out =
        new ArrayList<>(Collections.nCopies(keys.length, null));
    Map<RedisClusterNode, List<Integer>> byNode = new LinkedHashMap<>();
    for (int i = 0; i < keys.length; i++) {
      int slot = SlotHash.getSlot(keys[i]);
      RedisClusterNode node = map.getPartitionBySlot(slot);
      if (node == null) {
        out.set(i, CompletableFuture.failedFuture(new IOException("no node serves slot " + slot)));
        reloadSlots.run();
      } else {
        byNode.computeIfAbsent(node, n -> new ArrayList<>()).add(i);
      }
    }
    for (Map.Entry<RedisClusterNode, List<Integer>> e : byNode.entrySet()) {
      List<Integer> at = e.getValue();
      byte[][] sub = new byte[at.size()][];
      for (int j = 0; j < sub.length; j++) {
        sub[j] = keys[at.get(j)];
      }
      List<CompletableFuture<ChunkBuffer>> replies;
      try {
        replies = client(e.getKey().getUri()).get(sub);
      } catch (IOException ex) {
        replies = new ArrayList<>();
        for (int j = 0; j < sub.length; j++) {
          replies.add(CompletableFuture.failedFuture(ex));
        }
      }
      for (int j = 0; j < sub.length; j++) {
        CompletableFuture<ChunkBuffer> f = replies.get(j);
        f.whenComplete(
            (v, err) -> {
              if (err != null && redirected(err)) {
                reloadSlots.run();
              }
            });
        out.set(at.get(j), f);
      }
    }
    return out;
  }

  /** A {@code MOVED} or {@code ASK} reply: the slot map is out of date. */
  static boolean redirected(Throwable err) {
    String m = String.valueOf(err.getMessage());
    return m.startsWith("server error: MOVED ") || m.startsWith("server error: ASK ");
  }

  private RespGetClient client(RedisURI uri) {
    return nodes.computeIfAbsent(
        uri.getHost() + ":" + uri.getPort(),
        k ->
            new RespGetClient(
                () -> InetSocketAddress.createUnresolved(uri.getHost(), uri.getPort()),
                handshake,
                timeoutMillis,
                buffers,
                group));
  }

  @Override
  public void close() {
    nodes.values().forEach(RespGetClient::close);
    group.shutdownGracefully(0, 1, TimeUnit.SECONDS).awaitUninterruptibly(2, TimeUnit.SECONDS);
  }
}
