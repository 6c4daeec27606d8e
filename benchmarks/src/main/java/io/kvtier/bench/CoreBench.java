package io.kvtier.bench;

import io.kvtier.config.KvTierConfig;
import io.kvtier.engine.KvEngine;
import io.kvtier.key.KeyNamespace;
import io.kvtier.memory.HostMemory;
import io.kvtier.memory.MmapAllocator;
import java.util.Collection;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.OptionsBuilder;
import org.openjdk.jmh.runner.options.TimeValue;

/**
 * Runs the core benchmarks and prints each figure next to its baseline from the same run and the
 * goal it is held to. {@code quick} as the first argument shortens warm-up and measurement.
 *
 * <p>Run: {@code scripts/bench-java} (docs/benchmarks.md).
 */
public final class CoreBench {
  private CoreBench() {}

  public static void main(String[] args) throws RunnerException {
    boolean quick = args.length > 0 && args[0].equals("quick");
    ChainedOptionsBuilder opts =
        new OptionsBuilder()
            .include("io\\.kvtier\\.bench\\.(KeyBench|LookupBench|CpuStoreBench|PutBench)\\..*")
            .forks(quick ? 1 : 2)
            .jvmArgsAppend("-Xrs", "--enable-native-access=ALL-UNNAMED", "-Xmx2g")
            .warmupIterations(quick ? 2 : 4)
            .warmupTime(TimeValue.seconds(1))
            .measurementIterations(quick ? 3 : 8)
            .measurementTime(TimeValue.seconds(1))
            .timeUnit(TimeUnit.MICROSECONDS);
    double[] readyMillis = {engineReadyMillis(5), engineReadyMillis(100), engineReadyMillis(1000)};
    Collection<RunResult> results = new Runner(opts.build()).run();

    Map<String, Double> us = new HashMap<>(); // "Class.method[param]" -> microseconds per op
    for (RunResult r : results) {
      String name = r.getParams().getBenchmark().replace("io.kvtier.bench.", "");
      for (String p : r.getParams().getParamsKeys()) {
        name += "[" + r.getParams().getParam(p) + "]";
      }
      us.put(name, r.getPrimaryResult().getScore());
    }

    System.out.println();
    System.out.println("kvtier core benchmarks (same run; ratios against the baseline)");
    double hash = us.get("KeyBench.hashPrompt128k");
    double crc = us.get("KeyBench.crc32cSameBytes");
    line(
        "hash 128k-token prompt (512 chunks)",
        String.format(Locale.ROOT, "%.3f ms", hash / 1000),
        String.format(
            Locale.ROOT, "CRC32C of same 512 KiB: %.3f ms (%.2fx)", crc / 1000, hash / crc),
        verdict(hash / 1000 <= 2, "<= 2 ms"));
    double lookup = us.get("LookupBench.lookupFullHit128k");
    double miss = us.get("LookupBench.lookupMiss128k");
    line(
        "lookup 128k-token prompt, full hit",
        String.format(Locale.ROOT, "%.3f ms", lookup / 1000),
        String.format(Locale.ROOT, "first-chunk miss: %.1f us", miss),
        verdict(lookup / 1000 <= 5, "<= 5 ms"));
    for (Geometry g : Geometry.values()) {
      double get = us.get("CpuStoreBench.getAndCopyOut[" + g + "]");
      double copy = us.get("CpuStoreBench.plainCopy[" + g + "]");
      double gbps = g.chunkBytes(256) / (get * 1e-6) / 1e9;
      line(
          "CpuStore get+copy-out, " + g + " (" + (g.chunkBytes(256) >> 10) + " KiB chunk)",
          String.format(Locale.ROOT, "%.1f us (%.2f GB/s)", get, gbps),
          String.format(Locale.ROOT, "plain copy %.1f us: %.3fx", copy, copy / get),
          verdict(copy / get >= 0.9, ">= 0.9x"));
    }
    int[] gb = {5, 100, 1000};
    for (int i = 0; i < gb.length; i++) {
      line(
          "engine ready + first 32 MiB chunk, " + gb[i] + " GB pool",
          String.format(Locale.ROOT, "%.1f ms", readyMillis[i]),
          "(nothing touches the pool's pages up front)",
          verdict(readyMillis[i] <= 100, "<= 100 ms"));
    }
    double llamaCopy = us.get("CpuStoreBench.plainCopy[LLAMA_8B]");
    for (String policy : new String[] {"TINYLFU", "LRU"}) {
      double put = us.get("PutBench.putOne[" + policy + "]") * 1000;
      line(
          "put bookkeeping, " + policy + " (evicting)",
          String.format(Locale.ROOT, "%.0f ns/chunk", put),
          String.format(
              Locale.ROOT, "%.4f%% of a 32 MiB chunk copy", 100 * put / (llamaCopy * 1000)),
          verdict(put <= 1000, "<= 1 us"));
    }
  }

  /**
   * Milliseconds from nothing to an engine with a {@code gb} GB CPU tier that has stored its first
   * 32 MiB chunk (Llama-3.1-8B geometry), best of 3 (the first includes class loading).
   */
  private static double engineReadyMillis(int gb) {
    double best = Double.MAX_VALUE;
    for (int rep = 0; rep < 3; rep++) {
      long t0 = System.nanoTime();
      try (KvEngine engine =
          new KvEngine(
              KvTierConfig.of(Map.of("max_local_cpu_size", gb)),
              new KeyNamespace("bench", "bfloat16", 32, 8, 128, 1, 0, 256, false),
              Geometry.LLAMA_8B.bytesPerToken,
              MmapAllocator.INSTANCE)) {
        int[] tokens = new int[256];
        long[] h = engine.prepareStore(tokens, 256, 0);
        HostMemory.view(h[1], engine.chunkBytes()).fill((byte) 1);
        engine.completeStore(h[0], true);
        best = Math.min(best, (System.nanoTime() - t0) / 1e6);
      }
    }
    return best;
  }

  private static String verdict(boolean met, String goal) {
    return (met ? "MET " : "MISSED ") + goal;
  }

  private static void line(String what, String value, String baseline, String goal) {
    System.out.printf(Locale.ROOT, "  %-50s %-26s %-46s %s%n", what, value, baseline, goal);
  }
}
