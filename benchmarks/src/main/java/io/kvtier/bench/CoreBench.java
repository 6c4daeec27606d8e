package io.kvtier.bench;

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
            .forks(1)
            .jvmArgsAppend("-Xrs", "--enable-native-access=ALL-UNNAMED", "-Xmx2g")
            .warmupIterations(quick ? 2 : 4)
            .warmupTime(TimeValue.seconds(1))
            .measurementIterations(quick ? 3 : 8)
            .measurementTime(TimeValue.seconds(1))
            .timeUnit(TimeUnit.MICROSECONDS);
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

  private static String verdict(boolean met, String goal) {
    return (met ? "MET " : "MISSED ") + goal;
  }

  private static void line(String what, String value, String baseline, String goal) {
    System.out.printf(Locale.ROOT, "  %-50s %-26s %-46s %s%n", what, value, baseline, goal);
  }
}
