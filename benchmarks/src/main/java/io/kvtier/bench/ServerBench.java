package io.kvtier.bench;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.remote.server.ServerStore;
import io.kvtier.server.CacheServer;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.ArrayList;
import java.util.List;

/**
 * kvtier's cache server against a raw loopback TCP stream of the same bytes, same run.
 *
 * <ul>
 *   <li>Baseline: one blocking {@link SocketChannel} writing the bytes to a peer that reads them
 *       (upload), and the other way (download), through the same amount of memory as kvtier's run
 *       (n distinct values on the server side, kvtier's read-pool rotation on the client side).
 *   <li>kvtier: {@link ServerStore} PUTs of N values with 16 in flight, timed until every PUT is
 *       acknowledged, after a first round of N that fills the server (so slots are reused, as in a
 *       long-running server); then GETs in pipelined batches of 16 into pinned buffers.
 * </ul>
 *
 * Run: {@code scripts/bench-server}.
 */
public final class ServerBench {
  static final int IN_FLIGHT = 16;

  private ServerBench() {}

  public static void main(String[] args) throws Exception {
    System.out.println("kvtier cache server vs raw loopback TCP (same run)");
    List<Rounds> measures = new ArrayList<>();
    for (int mib : new int[] {4, 32}) {
      long size = (long) mib << 20;
      int n = mib == 4 ? 256 : 48;
      Rounds put = new Rounds("PUT " + mib + " MiB (upload)", "raw TCP", 0.8);
      Rounds get = new Rounds("GET " + mib + " MiB (download)", "raw TCP", 0.8);
      Rounds.compare(() -> rawTcp(size, n), () -> kvtier(size, n), put, get);
      measures.add(put);
      measures.add(get);
    }
    System.out.println();
    System.out.println(
        "median of " + Rounds.COUNT + " rounds (range of the ratio), after a warm-up round");
    measures.forEach(m -> System.out.println(m.line()));
  }

  /**
   * {upload B/s, download B/s} of n values of size bytes over one loopback connection, touching the
   * memory kvtier's run touches: the server side reads into (upload) or writes from (download) n
   * distinct values, as the cache server's slots; the client writes every value from one buffer (as
   * the PUT loop does) and reads into a rotation of as many buffers as kvtier's read pool. All
   * pages are faulted in before the clock starts.
   */
  private static double[] rawTcp(long size, int n) throws Exception {
    double[] out = new double[2];
    try (Arena arena = Arena.ofShared()) {
      ByteBuffer[] stored = buffers(arena, size, n);
      ByteBuffer[] one = buffers(arena, size, 1);
      ByteBuffer[] pool = buffers(arena, size, 2 * IN_FLIGHT + 4);
      for (int direction = 0; direction < 2; direction++) {
        try (ServerSocketChannel server = ServerSocketChannel.open()) {
          server.bind(new InetSocketAddress("127.0.0.1", 0));
          boolean upload = direction == 0;
          Thread peer =
              new Thread(
                  () -> {
                    try (SocketChannel c = server.accept()) {
                      stream(c, stored, n, !upload);
                    } catch (Exception e) {
                      throw new IllegalStateException(e);
                    }
                  });
          peer.start();
          try (SocketChannel c = SocketChannel.open(server.getLocalAddress())) {
            c.socket().setTcpNoDelay(true);
            long t0 = System.nanoTime();
            stream(c, upload ? one : pool, n, upload);
            peer.join();
            out[direction] = size * n / ((System.nanoTime() - t0) / 1e9);
          }
        }
      }
    }
    return out;
  }

  /** {@code count} direct buffers of {@code size} bytes, their pages faulted in. */
  private static ByteBuffer[] buffers(Arena arena, long size, int count) {
    ByteBuffer[] b = new ByteBuffer[count];
    for (int i = 0; i < count; i++) {
      MemorySegment m = arena.allocate(size, 4096);
      m.fill((byte) i);
      b[i] = m.asByteBuffer();
    }
    return b;
  }

  /** Writes (or reads) n values of one buffer's size, going round {@code buffers}. */
  private static void stream(SocketChannel c, ByteBuffer[] buffers, int n, boolean write)
      throws Exception {
    for (int i = 0; i < n; i++) {
      ByteBuffer b = buffers[i % buffers.length];
      b.clear();
      while (b.hasRemaining()) {
        if (write) {
          c.write(b);
        } else if (c.read(b) < 0) {
          throw new IllegalStateException("stream ended early");
        }
      }
    }
  }

  /** {PUT B/s, GET B/s} through a ServerStore against a CacheServer on loopback. */
  private static double[] kvtier(long size, int n) throws Exception {
    try (CacheServer server =
            new CacheServer(
                new CacheServer.Settings("127.0.0.1", 0, n * size, size, null, 0, null, 4));
        ChunkPool pool =
            new ChunkPool(MmapAllocator.INSTANCE, size, (2L * IN_FLIGHT + 4) * size, size);
        ServerStore store =
            new ServerStore(
                "kvtier://127.0.0.1:" + server.port(),
                60_000,
                IN_FLIGHT,
                size,
                pool::tryAllocate)) {
      ChunkBuffer value = pool.tryAllocate(size);
      value.segment().fill((byte) 9);
      // Warm-up: fill the server once, so the measured round reuses slots whose pages are already
      // faulted in (a long-running server's steady state), and warm the JIT.
      for (int i = 0; i < n; i++) {
        ChunkKey k = new ChunkKey(0, -1 - i, i);
        while (!store.put(k, value)) {
          Pipeline.full();
        }
      }
      Pipeline.drain(store::inFlightPuts);
      long warmupPuts = store.stats().puts();
      for (int i = 0; i < 2 * IN_FLIGHT; i++) { // fault the client's read buffers in too
        ChunkBuffer b = store.get(new ChunkKey(0, -1 - i, i));
        if (b != null) {
          b.release();
        }
      }
      for (int i = 0; i < n; i++) { // free the warm slots for the measured round
        store.remove(new ChunkKey(0, -1 - i, i));
      }

      long t0 = System.nanoTime();
      for (int i = 0; i < n; i++) {
        ChunkKey k = new ChunkKey(1, i, i);
        while (!store.put(k, value)) {
          Pipeline.full(); // wait for an acknowledgement
        }
      }
      Pipeline.drain(store::inFlightPuts);
      double putSeconds = (System.nanoTime() - t0) / 1e9;
      value.release();
      if (store.stats().puts() - warmupPuts < n) {
        throw new IllegalStateException("only " + (store.stats().puts() - warmupPuts) + " stored");
      }

      long g0 = System.nanoTime();
      for (int i = 0; i < n; i += IN_FLIGHT) {
        ChunkKey[] keys = new ChunkKey[Math.min(IN_FLIGHT, n - i)];
        for (int j = 0; j < keys.length; j++) {
          keys[j] = new ChunkKey(1, i + j, i + j);
        }
        for (ChunkBuffer b : store.getBatch(keys)) {
          if (b == null) {
            throw new IllegalStateException("a GET missed");
          }
          b.release();
        }
      }
      double getSeconds = (System.nanoTime() - g0) / 1e9;
      return new double[] {size * n / putSeconds, size * n / getSeconds};
    }
  }
}
