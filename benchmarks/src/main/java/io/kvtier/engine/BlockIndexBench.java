package io.kvtier.engine;

import io.kvtier.key.ChunkHasher;
import io.kvtier.key.ChunkKey;
import io.kvtier.key.KeyExtras;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;

/**
 * The bookkeeping block-granular hits add to every stored chunk (docs/keys.md, "Block prefixes"),
 * chunk 256 and block 16: {@code bookkeeping} hashes the chunk's 15 proper block prefixes and
 * records it in a {@link BlockIndex} that holds 64k chunks and sweeps when full (every source still
 * held, the worst case for the sweep); {@code chunkHash} is the chunk's own hash, which every store
 * computes anyway, as the baseline. In the engine's package to reach the index.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class BlockIndexBench {
  static final int CHUNK = 256;
  static final int BLOCK = 16;

  final BlockIndex index = new BlockIndex(1 << 16, k -> true);
  int[] tokens;
  long next;

  @Setup
  public void setup() {
    tokens = new Random(5).ints(CHUNK, 0, 152_000).toArray();
  }

  @Benchmark
  public BlockIndex bookkeeping() {
    tokens[0] = (int) next++; // a new chunk every time
    long[] p = ChunkHasher.blockPrefixes(null, KeyExtras.NONE, 0, tokens, 0, CHUNK - 1, BLOCK);
    index.record(new ChunkKey(7, next, ~next), p);
    return index;
  }

  @Benchmark
  public long[] chunkHash() {
    tokens[0] = (int) next++;
    return ChunkHasher.hashes(tokens, CHUNK, CHUNK, false, 1);
  }
}
