package io.kvtier.bench;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.remote.redis.RedisStore;
import java.io.IOException;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * {@link RedisStore} against {@code redis-benchmark} on the same local {@code redis-server}, same
 * run: SET and GET of 4 MiB and 32 MiB values, one connection, {@value #PIPELINE} requests in
 * flight ({@code redis-benchmark -c 1 -P 16}; kvtier: {@code remote_queue=16} for SET, batches of
 * 16 pipelined GETs).
 *
 * <p>Run: {@code scripts/bench-redis} (needs redis-server and redis-benchmark on the PATH).
 */
public final class RedisBench {
  static final int PIPELINE = 16;

  private RedisBench() {}

  public static void main(String[] args) throws Exception {
    int port;
    try (ServerSocket s = new ServerSocket(0)) {
      port = s.getLocalPort();
    }
    Path dir = Files.createTempDirectory("kvtier-redisbench");
    Process server =
        new ProcessBuilder(
                "redis-server",
                "--port",
                Integer.toString(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.toString(),
                "--proto-max-bulk-len",
                "1gb")
            .redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.DISCARD)
            .start();
    try {
      Thread.sleep(500);
      System.out.println("redis-server on 127.0.0.1:" + port);
      List<Rounds> measures = new ArrayList<>();
      for (int mib : new int[] {4, 32}) {
        int n = mib == 4 ? 256 : 48;
        Rounds set = new Rounds("SET " + mib + " MiB", "redis-benchmark", 0.9);
        Rounds get = new Rounds("GET " + mib + " MiB", "redis-benchmark", 0.9);
        int size = mib << 20;
        Rounds.compare(
            () -> flushedAfter(port, redisBenchmark(port, size, n)),
            () -> flushedAfter(port, kvtier(port, size, n)),
            set,
            get);
        measures.add(set);
        measures.add(get);
      }
      System.out.println();
      System.out.println(
          "kvtier remote tier on Redis against redis-benchmark (same run; median of "
              + Rounds.COUNT
              + " rounds, range of the ratio, after a warm-up round)");
      measures.forEach(m -> System.out.println(m.line()));
    } finally {
      server.destroy();
      server.waitFor(10, TimeUnit.SECONDS);
    }
  }

  /** Empties the server once a round is over, and returns the round's rates. */
  private static double[] flushedAfter(int port, double[] rates) throws Exception {
    run(port, "FLUSHALL");
    return rates;
  }

  /** {SET bytes/s, GET bytes/s} from redis-benchmark. */
  private static double[] redisBenchmark(int port, int size, int n) throws Exception {
    String out =
        run(
            "redis-benchmark",
            "-p",
            Integer.toString(port),
            "-t",
            "set,get",
            "-d",
            Integer.toString(size),
            "-n",
            Integer.toString(n),
            "-c",
            "1",
            "-P",
            Integer.toString(PIPELINE),
            "--csv");
    double set = Double.NaN;
    double get = Double.NaN;
    for (String l : out.split("\n")) {
      String[] f = l.replace("\"", "").split(",");
      if (f.length > 1 && f[0].equals("SET")) {
        set = Double.parseDouble(f[1]) * size;
      } else if (f.length > 1 && f[0].equals("GET")) {
        get = Double.parseDouble(f[1]) * size;
      }
    }
    return new double[] {set, get};
  }

  /** {SET bytes/s, GET bytes/s} through RedisStore. */
  private static double[] kvtier(int port, int size, int n) throws Exception {
    try (ChunkPool pool =
            new ChunkPool(MmapAllocator.INSTANCE, size, (long) (2 * PIPELINE + 4) * size, size);
        RedisStore store =
            new RedisStore("redis://127.0.0.1:" + port, 30_000, 0, PIPELINE, pool::tryAllocate)) {
      ChunkBuffer value = pool.tryAllocate(size);
      value.segment().fill((byte) 7);
      for (int i = 0; i < PIPELINE; i++) { // warm-up: connection, JIT
        store.put(new ChunkKey(0, -1 - i, i), value);
      }
      Pipeline.drain(store::inFlightPuts);

      long t0 = System.nanoTime();
      for (int i = 0; i < n; i++) {
        ChunkKey k = new ChunkKey(1, i, i);
        while (!store.put(k, value)) { // full pipeline: wait for a slot, as redis-benchmark does
          Pipeline.full();
        }
      }
      Pipeline.drain(store::inFlightPuts);
      double setSeconds = (System.nanoTime() - t0) / 1e9;
      if (store.stats().puts() < n) {
        throw new IllegalStateException("only " + store.stats().puts() + " SETs acknowledged");
      }
      value.release();

      long g0 = System.nanoTime();
      for (int i = 0; i < n; i += PIPELINE) {
        ChunkKey[] keys = new ChunkKey[Math.min(PIPELINE, n - i)];
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
      return new double[] {(double) n * size / setSeconds, (double) n * size / getSeconds};
    }
  }

  private static String run(int port, String cmd) throws Exception {
    return run("redis-cli", "-p", Integer.toString(port), cmd);
  }

  private static String run(String... cmd) throws IOException, InterruptedException {
    Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    if (p.waitFor() != 0) {
      throw new IllegalStateException(String.join(" ", cmd) + ": " + out);
    }
    return out;
  }
}
