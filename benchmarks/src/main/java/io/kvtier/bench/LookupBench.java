package io.kvtier.bench;

import io.kvtier.config.KvTierConfig;
import io.kvtier.engine.KvEngine;
import io.kvtier.key.KeyNamespace;
import io.kvtier.memory.MmapAllocator;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * {@code KvEngine.lookup} of a 128k-token prompt whose 512 chunks are all stored (hash every chunk,
 * then 512 index lookups), and of one whose first chunk misses.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
public class LookupBench {
  static final int TOKENS = 128 * 1024;
  static final long BYTES_PER_TOKEN = 16; // lookup cost does not depend on chunk bytes

  KvEngine engine;
  int[] stored;
  int[] missing;

  @Setup
  public void setup() {
    engine =
        new KvEngine(
            KvTierConfig.of(Map.of("max_local_cpu_size", 1)),
            new KeyNamespace("bench", "bfloat16", 1, 1, 8, 1, 0, 256, false),
            BYTES_PER_TOKEN,
            MmapAllocator.INSTANCE);
    stored = new Random(2).ints(TOKENS, 0, 152_000).toArray();
    missing = new Random(3).ints(TOKENS, 0, 152_000).toArray();
    long[] h = engine.prepareStore(stored, TOKENS, 0);
    if (engine.completeStore(h[0], true) != TOKENS / 256) {
      throw new IllegalStateException("setup did not store every chunk");
    }
    if (engine.lookup(stored, TOKENS) != TOKENS) {
      throw new IllegalStateException("setup lookup is not a full hit");
    }
  }

  @TearDown
  public void tearDown() {
    engine.close();
  }

  @Benchmark
  public int lookupFullHit128k() {
    return engine.lookup(stored, TOKENS);
  }

  @Benchmark
  public int lookupMiss128k() {
    return engine.lookup(missing, TOKENS);
  }
}
