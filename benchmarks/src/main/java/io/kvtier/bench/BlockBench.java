package io.kvtier.bench;

import io.kvtier.config.KvTierConfig;
import io.kvtier.engine.KvEngine;
import io.kvtier.key.ChunkHasher;
import io.kvtier.key.KeyExtras;
import io.kvtier.key.KeyNamespace;
import io.kvtier.memory.MmapAllocator;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * What block-granular hits cost per stored chunk (docs/keys.md, "Block prefixes"), chunk 256 and
 * block 16: storing one new chunk through the engine ({@code beginStore} + commit, evicting the
 * oldest once the CPU tier is full) with block granularity on ({@code blockTokens=16}) and off
 * ({@code 256}); the difference is the bookkeeping (prefix hashes, the block index). {@code
 * prefixes} is the hashing part alone and {@code chunkHash} the chunk's own hash as the baseline.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class BlockBench {
  static final int CHUNK = 256;

  @Param({"16", "256"})
  public int blockTokens;

  KvEngine engine;
  int[] tokens;
  int next;

  @Setup(Level.Trial)
  public void setup() {
    engine =
        new KvEngine(
            KvTierConfig.of(Map.of("max_local_cpu_size", 0.05)),
            new KeyNamespace("bench", "bfloat16", 1, 1, 8, 1, 0, CHUNK, false),
            16,
            MmapAllocator.INSTANCE);
    engine.useBlockSize(blockTokens);
    tokens = new Random(4).ints(CHUNK, 0, 152_000).toArray();
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    engine.close();
  }

  @Benchmark
  public int storeOneChunk() {
    tokens[0] = next++; // a new chunk every time
    var tx = engine.beginStore(tokens, CHUNK, KeyExtras.NONE, 0);
    return tx.commit();
  }

  @Benchmark
  public long[] prefixes() {
    return ChunkHasher.blockPrefixes(null, KeyExtras.NONE, 0, tokens, 0, CHUNK, blockTokens);
  }

  @Benchmark
  public long[] chunkHash() {
    return ChunkHasher.hashes(tokens, CHUNK, CHUNK, false, 1);
  }
}
