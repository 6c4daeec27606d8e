package io.kvtier.bench;

import io.kvtier.config.DiskSharding;
import io.kvtier.config.KvTierConfig;
import io.kvtier.disk.DiskStore;
import io.kvtier.disk.NioDiskIo;
import io.kvtier.engine.KvEngine;
import io.kvtier.engine.KvWorker;
import io.kvtier.key.ChunkKey;
import io.kvtier.key.KeyNamespace;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.HostMemory;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.transfer.KvCacheTransfer;
import io.kvtier.transfer.PagedKvCache;
import io.kvtier.transfer.PagedLayout;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.SplittableRandom;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import net.jpountz.lz4.LZ4Compressor;
import net.jpountz.lz4.LZ4Factory;
import net.jpountz.lz4.LZ4FastDecompressor;

/**
 * Disk tier against {@code fio} on the same directory, in the same run.
 *
 * <ul>
 *   <li>Sustained write of N 32 MiB chunks through {@link DiskStore} (O_DIRECT, T writer threads)
 *       vs {@code fio --rw=write --bs=32M --direct=1 --ioengine=psync --numjobs=T}: the same queue
 *       depth, one synchronous 32 MiB write in flight per thread. Also the p50/p99/max time a
 *       {@code put} takes to return while the writers saturate the disk.
 *   <li>Parallel read of the same chunks with {@link DiskStore#getBatch} (T reader threads) vs
 *       {@code fio --rw=read} with the same settings.
 *   <li>Caller-visible store cost of a 32 MiB chunk (engine store: copy into the CPU tier plus
 *       bookkeeping) with a disk tier behind the CPU tier vs CPU only, alternating, same run.
 *   <li>LZ4 on bf16 KV-like data (normally distributed values) and on a smooth, repetitive bf16
 *       tensor: ratio and speed, so users can decide.
 * </ul>
 *
 * Run: {@code scripts/bench-disk [dir] [chunks] [threads]} (defaults /var/tmp/kvtier-diskbench, 48,
 * 4). Needs {@code fio} on the PATH for the comparison.
 */
public final class DiskBench {
  static final long CHUNK = 32L << 20;

  private DiskBench() {}

  public static void main(String[] args) throws Exception {
    Path dir = Path.of(args.length > 0 ? args[0] : "/var/tmp/kvtier-diskbench");
    int chunks = args.length > 1 ? Integer.parseInt(args[1]) : 48;
    int threads = args.length > 2 ? Integer.parseInt(args[2]) : 4;
    deleteTree(dir);
    Files.createDirectories(dir);
    System.out.printf(
        Locale.ROOT,
        "disk benchmark: %d chunks of 32 MiB (%.1f GiB) in %s, %d threads%n",
        chunks,
        chunks * CHUNK / (double) (1L << 30),
        dir,
        threads);

    Map<String, Double> fio = runFio(dir.resolve("fio"), chunks, threads);
    double[] kv = kvtierWriteRead(dir.resolve("kvtier"), chunks, threads);
    double[] putCost = storeCost(dir.resolve("engine"), threads);
    double[] lz4 = lz4Figures();
    double[] load = loadFromDisk(dir.resolve("load"));

    System.out.println();
    System.out.println("kvtier disk tier (same run; ratios against the baseline)");
    if (fio.isEmpty()) {
      System.out.println(
          "  fio not found on PATH: install it (apt-get install fio) for the ratios");
    }
    double fioWrite = fio.getOrDefault("write", Double.NaN);
    double fioRead = fio.getOrDefault("read", Double.NaN);
    line(
        "sustained write, 32 MiB chunks, O_DIRECT",
        gbps(kv[0]),
        "fio seq write " + gbps(fioWrite),
        ratio(kv[0] / fioWrite, 0.9));
    line(
        "parallel read (getBatch), 32 MiB chunks",
        gbps(kv[1]),
        "fio seq read " + gbps(fioRead),
        ratio(kv[1] / fioRead, 0.9));
    line(
        "put submit while writers saturate the disk",
        String.format(Locale.ROOT, "p99 %.1f us", kv[3]),
        String.format(
            Locale.ROOT,
            "p50 %.1f us, max %.1f us; map insert p99 %.1f us; the clock alone p99 %.1f us,"
                + " max %.1f us",
            kv[2],
            kv[4],
            kv[5],
            kv[6],
            kv[7]),
        (kv[3] <= 20 ? "MET" : "MISSED") + " p99 <= 20 us");
    line(
        "engine store of a 32 MiB chunk, CPU+disk",
        String.format(Locale.ROOT, "%.2f ms", putCost[1]),
        String.format(Locale.ROOT, "CPU only %.2f ms", putCost[0]),
        String.format(
            Locale.ROOT,
            "%s at most 5%% more (%+.1f%%)",
            putCost[1] / putCost[0] - 1 <= 0.05 ? "MET" : "MISSED",
            100 * (putCost[1] / putCost[0] - 1)));
    line(
        "LZ4 on bf16 N(0,1) values (KV-like)",
        String.format(Locale.ROOT, "ratio %.3f", lz4[0]),
        String.format(Locale.ROOT, "compress %.0f MB/s, decompress %.0f MB/s", lz4[1], lz4[2]),
        "(size on disk / raw)");
    line(
        "LZ4 on smooth, repetitive bf16",
        String.format(Locale.ROOT, "ratio %.3f", lz4[3]),
        String.format(Locale.ROOT, "compress %.0f MB/s, decompress %.0f MB/s", lz4[4], lz4[5]),
        "(size on disk / raw)");
    line(
        "load a 7,936-token prompt from disk (93 MiB)",
        String.format(Locale.ROOT, "%.1f ms [%.1f-%.1f]", load[0], load[1], load[2]),
        String.format(
            Locale.ROOT, "read, then copy %.1f ms [%.1f-%.1f]", load[3], load[4], load[5]),
        String.format(Locale.ROOT, "%.2fx (copied as read)", load[0] / load[3]));
    deleteTree(dir);
  }

  /**
   * A fresh worker's load of a 7,936-token prompt (the tiny model of {@code
   * benchmarks/vllm_bench.py} in float32: 12 layers, 2 KV heads of 64, vLLM's CPU-backend layout
   * with blocks of 128, chunks of 256: 31 chunks, 93 MiB) from the disk tier into a paged cache,
   * the CPU tier staging only, as after a restart. Each chunk copied into the cache as its read
   * ends ({@link PagedKvCache}) against every chunk read first, then copied (the same cache behind
   * a wrapper that asks for that, as a GPU cache does); alternating, 20 of each after 5 warm-up
   * pairs. Returns {median, min, max} of each, in ms.
   */
  static double[] loadFromDisk(Path dir) throws Exception {
    int layers = 12;
    int blockTokens = 128;
    int blocks = 128;
    int tokens = 7936;
    PagedLayout layout = PagedLayout.cpuBackend(blocks, blockTokens, 2, 64, 4);
    Files.createDirectories(dir);
    KvTierConfig config =
        KvTierConfig.of(
            Map.of(
                "chunk_size",
                256,
                "local_cpu",
                false,
                "local_disk",
                dir.toString(),
                "max_local_disk_size",
                1));
    KeyNamespace ns = new KeyNamespace("bench", "float32", layers, 2, 64, 1, 0, 256, false);
    int runs = 20;
    double[][] ms = new double[2][runs];
    try (Arena arena = Arena.ofShared()) {
      MemorySegment[] tensors = new MemorySegment[layers];
      for (int l = 0; l < layers; l++) {
        tensors[l] = arena.allocate(layout.tensorBytes(), 4096).fill((byte) l);
      }
      PagedKvCache cache = new PagedKvCache(tensors, layout, 2);
      try (KvEngine engine = new KvEngine(config, ns, cache.tokenBytes(), MmapAllocator.INSTANCE);
          KvWorker asRead = new KvWorker(engine, cache, 1);
          KvWorker afterRead = new KvWorker(engine, new CopyAfterRead(cache), 1)) {
        int[] prompt = new SplittableRandom(3).ints(tokens, 0, 1 << 20).toArray();
        List<Integer> ids = new ArrayList<>();
        for (int b = 1; b < blocks; b++) {
          ids.add(b);
        }
        Collections.shuffle(ids, new Random(1)); // vLLM hands out blocks in no particular order
        int[] table =
            ids.stream().limit(tokens / blockTokens).mapToInt(Integer::intValue).toArray();
        if (asRead.save(prompt, tokens, table, 0) != tokens / 256
            || !engine.tiers().awaitIdle(60_000)) {
          throw new IllegalStateException("the prompt was not stored on disk");
        }
        for (int r = 0; r < runs + 5; r++) {
          for (int m = 0; m < 2; m++) {
            boolean first = (r + m) % 2 == 0; // which goes first alternates
            KvWorker w = first ? asRead : afterRead;
            long t0 = System.nanoTime();
            int end = w.load(prompt, tokens, table, 0, tokens);
            long t1 = System.nanoTime();
            if (end != tokens) {
              throw new IllegalStateException("loaded " + end + " of " + tokens + " tokens");
            }
            if (r >= 5) {
              ms[first ? 0 : 1][r - 5] = (t1 - t0) / 1e6;
            }
          }
        }
      }
    }
    deleteTree(dir);
    Arrays.sort(ms[0]);
    Arrays.sort(ms[1]);
    return new double[] {
      ms[0][runs / 2], ms[0][0], ms[0][runs - 1], ms[1][runs / 2], ms[1][0], ms[1][runs - 1]
    };
  }

  /** A host cache that asks loads to copy only once every chunk is read (as GPU caches do). */
  private record CopyAfterRead(PagedKvCache cache) implements KvCacheTransfer {
    @Override
    public int layerCount() {
      return cache.layerCount();
    }

    @Override
    public PagedLayout layout() {
      return cache.layout();
    }

    @Override
    public void gather(int[] blockIds, int firstToken, int count, MemorySegment chunk) {
      cache.gather(blockIds, firstToken, count, chunk);
    }

    @Override
    public void gatherLayer(
        int layer, int[] blockIds, int firstToken, int count, MemorySegment chunk) {
      cache.gatherLayer(layer, blockIds, firstToken, count, chunk);
    }

    @Override
    public void scatter(
        MemorySegment chunk, int rowTokens, int[] blockIds, int chunkStart, int skip, int count) {
      cache.scatter(chunk, rowTokens, blockIds, chunkStart, skip, count);
    }

    @Override
    public void scatterLayer(
        int layer,
        MemorySegment chunk,
        int rowTokens,
        int[] blockIds,
        int chunkStart,
        int skip,
        int count) {
      cache.scatterLayer(layer, chunk, rowTokens, blockIds, chunkStart, skip, count);
    }

    @Override
    public void moveLayers(
        boolean toCache,
        int[] layerIds,
        MemorySegment chunk,
        int rowTokens,
        int[] blockIds,
        int chunkStart,
        int skip,
        int count) {
      cache.moveLayers(toCache, layerIds, chunk, rowTokens, blockIds, chunkStart, skip, count);
    }
  }

  // ---- fio ------------------------------------------------------------------------------------

  private static Map<String, Double> runFio(Path dir, int chunks, int threads) throws Exception {
    Map<String, Double> out = new HashMap<>();
    Files.createDirectories(dir);
    long perJob = chunks / threads * CHUNK;
    for (String rw : new String[] {"write", "read"}) {
      List<String> cmd =
          List.of(
              "fio",
              "--name=seq" + rw,
              "--directory=" + dir,
              "--rw=" + rw,
              "--bs=32M",
              "--size=" + perJob,
              "--numjobs=" + threads,
              "--ioengine=psync",
              "--direct=1",
              "--group_reporting",
              "--output-format=json");
      Process p;
      try {
        p = new ProcessBuilder(cmd).redirectErrorStream(false).start();
      } catch (IOException e) {
        return Map.of();
      }
      String json = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
      if (p.waitFor() != 0) {
        System.out.println("fio failed: " + new String(p.getErrorStream().readAllBytes()));
        return Map.of();
      }
      // With group_reporting there is one job; its "<rw>" section carries "bw_bytes".
      Matcher m =
          Pattern.compile("\"" + rw + "\"\\s*:\\s*\\{[^}]*?\"bw_bytes\"\\s*:\\s*([0-9.]+)")
              .matcher(json);
      if (!m.find()) {
        throw new IllegalStateException("no bw_bytes for " + rw + " in fio output");
      }
      out.put(rw, Double.parseDouble(m.group(1)));
    }
    deleteTree(dir);
    return out;
  }

  // ---- kvtier ---------------------------------------------------------------------------------

  /** Returns {write B/s, read B/s, put p50 us, put p99 us, put max us, baseline p99 us}. */
  private static double[] kvtierWriteRead(Path dir, int chunks, int threads) throws Exception {
    try (ChunkPool pool =
        new ChunkPool(MmapAllocator.INSTANCE, CHUNK, (chunks + 8) * CHUNK, 8 * CHUNK)) {
      List<ChunkBuffer> data = new ArrayList<>();
      Random r = new Random(1);
      for (int i = 0; i < chunks; i++) {
        ChunkBuffer b = pool.tryAllocate(CHUNK);
        MemorySegment s = b.segment();
        long seed = r.nextLong();
        for (long off = 0; off < CHUNK; off += 8) {
          s.set(ValueLayout.JAVA_LONG_UNALIGNED, off, seed ^ off * 0x9E3779B97F4A7C15L);
        }
        data.add(b);
      }
      DiskStore.Settings settings =
          new DiskStore.Settings(
              List.of(dir),
              DiskSharding.BY_GPU,
              (chunks + 4) * (CHUNK + 8192),
              true,
              false,
              threads,
              threads,
              chunks + 1);
      double[] out = new double[8];
      ChunkKey[] keys = new ChunkKey[chunks];
      try (DiskStore store = new DiskStore(settings, pool::tryAllocate, NioDiskIo.INSTANCE)) {
        long t0 = System.nanoTime();
        for (int i = 0; i < chunks; i++) {
          keys[i] = new ChunkKey(1, i, i);
          store.put(keys[i], data.get(i));
        }
        if (!store.awaitIdle(600_000)) {
          throw new IllegalStateException("writes did not finish");
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        out[0] = chunks * CHUNK / seconds;
        if (store.stats().entries() != chunks) {
          throw new IllegalStateException("only " + store.stats().entries() + " chunks written");
        }
        data.forEach(ChunkBuffer::release);

        long r0 = System.nanoTime();
        ChunkBuffer[] got = store.getBatch(keys);
        double readSeconds = (System.nanoTime() - r0) / 1e9;
        for (ChunkBuffer b : got) {
          if (b == null) {
            throw new IllegalStateException("a chunk could not be read back");
          }
          b.release();
        }
        out[1] = chunks * CHUNK / readSeconds;
      }
      deleteTree(dir);
      double[] submit = submitLatency(dir, pool, threads);
      out[2] = submit[0];
      out[3] = submit[1];
      out[4] = submit[2];
      out[5] = submit[3];
      out[6] = submit[4];
      out[7] = submit[5];
      deleteTree(dir);
      return out;
    }
  }

  /**
   * Microseconds {@code put} takes to return while the writers saturate the disk: 2,000 puts of 32
   * MiB chunks (a few buffers under distinct keys), one every 100 us, so the queue stays full and
   * the disk busy; the first 200 are warm-up. Returns {p50, p99, max}.
   */
  private static double[] submitLatency(Path dir, ChunkPool pool, int threads) throws Exception {
    int n = 2000;
    int warmup = 200;
    List<ChunkBuffer> bufs = new ArrayList<>();
    for (int i = 0; i < 4; i++) {
      ChunkBuffer b = pool.tryAllocate(CHUNK);
      b.segment().fill((byte) i);
      bufs.add(b);
    }
    DiskStore.Settings settings =
        new DiskStore.Settings(
            List.of(dir), DiskSharding.BY_GPU, 8L << 30, true, false, threads, threads, 32);
    long[] ns = new long[n - warmup];
    long[] base = new long[n - warmup];
    long[] empty = new long[n - warmup];
    Map<ChunkKey, Integer> trivial = new java.util.concurrent.ConcurrentHashMap<>();
    try (DiskStore store = new DiskStore(settings, pool::tryAllocate, NioDiskIo.INSTANCE)) {
      for (int i = 0; i < n; i++) {
        ChunkKey k = new ChunkKey(2, i, i);
        // Baseline: a trivial map insert on the same thread at the same moment. Whichever of the
        // two runs first after the thread wakes pays for cold caches, so they take turns.
        long put;
        long trivialNanos;
        // The clock alone: what a thread that does nothing between two readings sees here.
        long e0 = System.nanoTime();
        long e1 = System.nanoTime();
        if ((i & 1) == 0) {
          long t0 = System.nanoTime();
          store.put(k, bufs.get(i % bufs.size()));
          long t1 = System.nanoTime();
          trivial.put(k, i);
          long t2 = System.nanoTime();
          put = t1 - t0;

          trivialNanos = t2 - t1;
        } else {
          long t0 = System.nanoTime();
          trivial.put(k, i);
          long t1 = System.nanoTime();
          store.put(k, bufs.get(i % bufs.size()));
          long t2 = System.nanoTime();
          trivialNanos = t1 - t0;
          put = t2 - t1;
        }
        if (i >= warmup) {
          ns[i - warmup] = put;
          base[i - warmup] = trivialNanos;
          empty[i - warmup] = e1 - e0;
        }
        java.util.concurrent.locks.LockSupport.parkNanos(100_000); // like a step loop between steps
      }
      // The same puts back to back, caches warm: the cost of the code itself.
      long[] hot = new long[100_000];
      for (int i = 0; i < hot.length; i++) {
        ChunkKey k = new ChunkKey(4, i, i);
        long t0 = System.nanoTime();
        store.put(k, bufs.get(0));
        hot[i] = System.nanoTime() - t0;
      }
      Arrays.sort(hot);
      System.out.printf(
          Locale.ROOT,
          "put back to back while saturated: p50 %d ns, p99 %d ns%n",
          hot[hot.length / 2],
          hot[(int) (hot.length * 0.99)]);
      System.out.printf(
          Locale.ROOT,
          "submit phase: %d puts, %d written, %d dropped (queue full)%n",
          n,
          store.stats().puts(),
          store.stats().droppedPuts());
    }
    bufs.forEach(ChunkBuffer::release);
    Arrays.sort(ns);
    Arrays.sort(base);
    Arrays.sort(empty);
    int p99 = (int) Math.ceil(ns.length * 0.99) - 1;
    return new double[] {
      ns[ns.length / 2] / 1e3,
      ns[p99] / 1e3,
      ns[ns.length - 1] / 1e3,
      base[p99] / 1e3,
      empty[p99] / 1e3,
      empty[empty.length - 1] / 1e3
    };
  }

  /** Median ms of an engine store of one 32 MiB chunk: {CPU only, CPU + disk}. */
  private static double[] storeCost(Path dir, int threads) throws Exception {
    KeyNamespace ns = new KeyNamespace("bench", "bfloat16", 32, 8, 128, 1, 0, 256, false);
    long bytesPerToken = CHUNK / 256;
    Map<String, Object> cpuOnly = Map.of("max_local_cpu_size", 1);
    Map<String, Object> withDisk =
        Map.of(
            "max_local_cpu_size",
            1,
            "local_disk",
            dir.toString(),
            "max_local_disk_size",
            4,
            "disk_write_threads",
            threads,
            "extra_config",
            Map.of("use_odirect", true));
    int warmup =
        40; // more than the 32 slots of each 1 GB pool: measured stores reuse faulted pages
    int reps = 60;
    double[][] ms = new double[2][reps];
    try (Arena arena = Arena.ofConfined();
        KvEngine a =
            new KvEngine(KvTierConfig.of(cpuOnly), ns, bytesPerToken, MmapAllocator.INSTANCE);
        KvEngine b =
            new KvEngine(KvTierConfig.of(withDisk), ns, bytesPerToken, MmapAllocator.INSTANCE)) {
      MemorySegment src = arena.allocate(CHUNK, 4096);
      src.fill((byte) 3);
      long[] addr = {src.address()};
      int[] tokens = new int[256];
      for (int i = 0; i < warmup + reps; i++) {
        for (int which = 0; which < 2; which++) {
          KvEngine e = which == 0 ? a : b;
          Arrays.fill(tokens, i * 2 + which + 1_000_000); // a new prompt each time
          long t0 = System.nanoTime();
          e.store(tokens, 256, addr);
          if (i >= warmup) {
            ms[which][i - warmup] = (System.nanoTime() - t0) / 1e6;
          }
        }
      }
      HostMemory.crc32(src.address(), 8); // keep src live to the end
    }
    deleteTree(dir);
    Arrays.sort(ms[0]);
    Arrays.sort(ms[1]);
    return new double[] {ms[0][reps / 2], ms[1][reps / 2]};
  }

  /** {ratio, compress MB/s, decompress MB/s} for KV-like data, then for repetitive data. */
  private static double[] lz4Figures() {
    int n = 32 << 20;
    LZ4Factory f = LZ4Factory.fastestInstance();
    double[] out = new double[6];
    byte[][] inputs = {bf16Normal(n), bf16Smooth(n)};
    for (int k = 0; k < 2; k++) {
      byte[] in = inputs[k];
      LZ4Compressor c = f.fastCompressor();
      LZ4FastDecompressor d = f.fastDecompressor();
      byte[] comp = new byte[c.maxCompressedLength(n)];
      byte[] back = new byte[n];
      int len = 0;
      long bestC = Long.MAX_VALUE;
      long bestD = Long.MAX_VALUE;
      for (int rep = 0; rep < 5; rep++) {
        long t0 = System.nanoTime();
        len = c.compress(in, 0, n, comp, 0, comp.length);
        long t1 = System.nanoTime();
        d.decompress(comp, 0, back, 0, n);
        long t2 = System.nanoTime();
        bestC = Math.min(bestC, t1 - t0);
        bestD = Math.min(bestD, t2 - t1);
      }
      if (!Arrays.equals(in, back)) {
        throw new IllegalStateException("LZ4 round trip failed");
      }
      out[3 * k] = len / (double) n;
      out[3 * k + 1] = n / (bestC / 1e9) / 1e6;
      out[3 * k + 2] = n / (bestD / 1e9) / 1e6;
    }
    return out;
  }

  /** bf16 encodings of N(0, 1) samples, as K and V activations roughly are. */
  static byte[] bf16Normal(int n) {
    Random r = new Random(7);
    byte[] b = new byte[n];
    for (int i = 0; i < n; i += 2) {
      int bits = Float.floatToRawIntBits((float) r.nextGaussian()) >>> 16;
      b[i] = (byte) bits;
      b[i + 1] = (byte) (bits >>> 8);
    }
    return b;
  }

  /** A slowly varying bf16 signal with repeats: a best case for LZ4. */
  static byte[] bf16Smooth(int n) {
    byte[] b = new byte[n];
    for (int i = 0; i < n; i += 2) {
      int bits = Float.floatToRawIntBits((float) Math.sin((i / 2 % 4096) / 64.0)) >>> 16;
      b[i] = (byte) bits;
      b[i + 1] = (byte) (bits >>> 8);
    }
    return b;
  }

  private static String gbps(double bytesPerSecond) {
    return String.format(Locale.ROOT, "%.2f GB/s", bytesPerSecond / 1e9);
  }

  private static String ratio(double r, double goal) {
    return Double.isNaN(r)
        ? "(no fio)"
        : String.format(Locale.ROOT, "%.2fx %s >= %.1fx", r, r >= goal ? "MET" : "MISSED", goal);
  }

  private static void line(String what, String value, String baseline, String goal) {
    System.out.printf(Locale.ROOT, "  %-44s %-16s %-44s %s%n", what, value, baseline, goal);
  }

  static void deleteTree(Path dir) throws IOException {
    if (!Files.exists(dir)) {
      return;
    }
    try (Stream<Path> s = Files.walk(dir)) {
      for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
        Files.delete(p);
      }
    }
  }
}
