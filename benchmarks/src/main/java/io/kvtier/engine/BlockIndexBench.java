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
 * chunk 256 and block 16: {@code bookkeeping} hashes the chunk's 16 block prefixes in one pass (the
 * last is the chunk's own hash, so this replaces the chunk's hashing) and records them in a {@link
 * BlockIndex} that remembers 64k chunks, full after the first 64k operations (each record then also
 * forgets the oldest); {@code chunkHash} is the chunk's own hash alone, what a store computes
 * without block granularity: the difference is the cost. In the engine's package to reach the
 * index.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class BlockIndexBench {
  static final int CHUNK = 256;
  static final int BLOCK = 16;

  final BlockIndex index = new BlockIndex(1 << 16);
  int[] tokens;
  long next;

  @Setup
  public void setup() {
    tokens = new Random(5).ints(CHUNK, 0, 152_000).toArray();
  }

  @Benchmark
  public BlockIndex bookkeeping() {
    tokens[0] = (int) next++; // a new chunk every time
    // As the engine does: one pass gives the 16 prefixes, the last being the chunk's own hash.
    long[] all = ChunkHasher.blockPrefixes(null, KeyExtras.NONE, 0, tokens, 0, CHUNK, BLOCK);
    ChunkKey key = new ChunkKey(7, all[all.length - 2], all[all.length - 1]);
    index.record(key, all);
    return index;
  }

  @Benchmark
  public long[] chunkHash() {
    tokens[0] = (int) next++;
    return ChunkHasher.hashes(tokens, CHUNK, CHUNK, false, 1);
  }
}
