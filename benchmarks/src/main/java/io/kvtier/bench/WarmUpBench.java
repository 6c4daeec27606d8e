package io.kvtier.bench;

import io.kvtier.config.KvTierConfig;
import io.kvtier.engine.KvEngine;
import io.kvtier.engine.KvWorker;
import io.kvtier.engine.WarmUp;
import io.kvtier.key.KeyNamespace;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.transfer.PagedKvCache;
import io.kvtier.transfer.PagedLayout;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * The first save and load in a fresh JVM against the tenth, with and without {@link WarmUp} at
 * start. Each run is a new JVM (the parent starts them, alternating with and without warm-up); a
 * run saves ten 2,048-token prompts through a {@link KvWorker} and loads them back, timing each,
 * from the CPU tier or (second configuration) from the disk tier with the CPU tier staging only.
 *
 * <p>Geometry: the tiny model of {@code benchmarks/vllm_bench.py} (12 layers, 2 KV heads of 64,
 * bf16, 6 KiB per token) in vLLM's CPU-backend layout, blocks of 32 tokens, chunks of 256.
 *
 * <p>Usage: {@code scripts/bench-warmup [repetitions]} (default 3).
 */
public final class WarmUpBench {
  private static final int LAYERS = 12;
  private static final int HEADS = 2;
  private static final int HEAD = 64;
  private static final int BLOCK = 32;
  private static final int CHUNK = 256;
  private static final int PROMPT = 2048;
  private static final int PROMPTS = 10;

  private WarmUpBench() {}

  public static void main(String[] args) throws Exception {
    if (args.length > 0 && args[0].equals("child")) {
      child(Boolean.parseBoolean(args[1]), args.length > 2 ? Path.of(args[2]) : null);
      return;
    }
    int reps = args.length > 0 ? Integer.parseInt(args[0]) : 3;
    System.out.println(
        "kvtier warm-up: first save and load in a fresh JVM against the tenth (same run;"
            + " medians of "
            + reps
            + " fresh JVMs each, alternating)");
    for (boolean disk : new boolean[] {false, true}) {
      Map<Boolean, List<double[]>> runs = new HashMap<>();
      for (int r = 0; r < reps; r++) {
        for (boolean warm : new boolean[] {false, true}) {
          Path dir = disk ? Files.createTempDirectory("kvtier-warmup-bench-") : null;
          try {
            runs.computeIfAbsent(warm, k -> new ArrayList<>()).add(spawn(warm, dir));
          } finally {
            if (dir != null) {
              DiskBench.deleteTree(dir);
            }
          }
        }
      }
      String tier = disk ? "disk tier (CPU tier staging)" : "CPU tier";
      for (boolean warm : new boolean[] {false, true}) {
        double[] m = medians(runs.get(warm));
        System.out.printf(
            Locale.ROOT,
            "  %-28s %-14s save 1st %7.1f ms  10th %6.1f ms (%5.1fx)   load 1st %7.1f ms  10th %6.1f"
                + " ms (%5.1fx)   warm-up %5.0f ms%n",
            tier,
            warm ? "with warm-up" : "without",
            m[0],
            m[1],
            m[0] / m[1],
            m[2],
            m[3],
            m[2] / m[3],
            m[4]);
      }
    }
  }

  /** Runs one fresh JVM; returns {@code [save1, save10, load1, load10, warmUp]} in ms. */
  private static double[] spawn(boolean warm, Path disk) throws Exception {
    String java = ProcessHandle.current().info().command().orElse("java");
    List<String> cmd =
        new ArrayList<>(
            List.of(
                java,
                "-Xrs",
                "--enable-native-access=ALL-UNNAMED",
                "-Djava.util.logging.config.file=/dev/null",
                "-cp",
                System.getProperty("java.class.path"),
                WarmUpBench.class.getName(),
                "child",
                Boolean.toString(warm)));
    if (disk != null) {
      cmd.add(disk.toString());
    }
    Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
    String result = null;
    StringBuilder out = new StringBuilder();
    try (BufferedReader r =
        new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
      for (String line; (line = r.readLine()) != null; ) {
        out.append(line).append('\n');
        if (line.startsWith("RESULT ")) {
          result = line.substring(7);
        }
      }
    }
    if (p.waitFor() != 0 || result == null) {
      throw new IllegalStateException("a warm-up run failed:\n" + out);
    }
    return Arrays.stream(result.split(" ")).mapToDouble(Double::parseDouble).toArray();
  }

  private static void child(boolean warm, Path disk) throws Exception {
    PagedLayout layout =
        PagedLayout.cpuBackend(PROMPT / BLOCK * PROMPTS + 1, BLOCK, HEADS, HEAD, 2);
    Map<String, Object> settings = new HashMap<>();
    settings.put("chunk_size", CHUNK);
    settings.put("max_local_cpu_size", 1);
    if (disk != null) {
      settings.put("local_cpu", false);
      settings.put("local_disk", disk.toString());
      settings.put("max_local_disk_size", 2);
    }
    KvTierConfig config = KvTierConfig.of(settings);
    double warmUpMs = 0;
    if (warm) {
      long t = System.nanoTime();
      WarmUp.run(config, layout, 2);
      warmUpMs = (System.nanoTime() - t) / 1e6;
    }
    KeyNamespace ns =
        new KeyNamespace("bench", "bfloat16", LAYERS, HEADS, HEAD, 1, 0, CHUNK, false);
    SplittableRandom random = new SplittableRandom(3);
    double[] save = new double[PROMPTS];
    double[] load = new double[PROMPTS];
    try (Arena arena = Arena.ofShared()) {
      MemorySegment[] layers = new MemorySegment[LAYERS];
      for (int l = 0; l < LAYERS; l++) {
        layers[l] = arena.allocate(layout.tensorBytes(), 4096).fill((byte) l);
      }
      PagedKvCache cache = new PagedKvCache(layers, layout, 2);
      try (KvEngine engine = new KvEngine(config, ns, cache.tokenBytes(), MmapAllocator.INSTANCE);
          KvWorker worker = new KvWorker(engine, cache, 2)) {
        int[][] prompts = new int[PROMPTS][];
        int[][] blocks = new int[PROMPTS][];
        for (int i = 0; i < PROMPTS; i++) {
          prompts[i] = random.ints(PROMPT, 0, 1 << 20).toArray();
          blocks[i] = new int[PROMPT / BLOCK];
          for (int b = 0; b < blocks[i].length; b++) {
            blocks[i][b] = i * blocks[i].length + b;
          }
        }
        for (int i = 0; i < PROMPTS; i++) {
          long t = System.nanoTime();
          long ticket = worker.submitSave(prompts[i], PROMPT, blocks[i], 0);
          worker.awaitTickets(new long[] {ticket}, 60_000);
          save[i] = (System.nanoTime() - t) / 1e6;
        }
        if (!engine.tiers().awaitIdle(60_000)) {
          throw new IllegalStateException("copy-downs still in flight");
        }
        for (int i = 0; i < PROMPTS; i++) {
          long t = System.nanoTime();
          int[] hit = engine.lookupAndPinTiers(i + 1, prompts[i], PROMPT);
          long ticket = worker.submitLoad(prompts[i], hit[0], blocks[i], 0, hit[0] - 1);
          worker.awaitTickets(new long[] {ticket}, 60_000);
          load[i] = (System.nanoTime() - t) / 1e6;
          engine.unpinRequest(i + 1);
          if (hit[0] != PROMPT) {
            throw new IllegalStateException("prompt " + i + " hit " + hit[0] + " tokens");
          }
        }
        long[] done = worker.drainCompleted();
        for (int i = 1; i < done.length; i += 2) {
          if (done[i] == 0) {
            throw new IllegalStateException("a save or load moved nothing");
          }
        }
      }
    }
    System.out.printf(
        Locale.ROOT,
        "RESULT %.3f %.3f %.3f %.3f %.3f%n",
        save[0],
        save[PROMPTS - 1],
        load[0],
        load[PROMPTS - 1],
        warmUpMs);
  }

  private static double[] medians(List<double[]> runs) {
    double[] m = new double[runs.get(0).length];
    for (int k = 0; k < m.length; k++) {
      final int col = k;
      m[k] = Rounds.median(runs.stream().mapToDouble(r -> r[col]).toArray());
    }
    return m;
  }
}
