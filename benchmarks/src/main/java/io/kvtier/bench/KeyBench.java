package io.kvtier.bench;

import io.kvtier.key.ChunkHasher;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.zip.CRC32C;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;

/**
 * Hashing a 128k-token prompt into 512 chained chunk hashes, against CRC32C (hardware-assisted in
 * the JDK) of the same 512 KiB as a baseline.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
public class KeyBench {
  static final int TOKENS = 128 * 1024;

  int[] tokens;
  ByteBuffer bytes;

  @Setup
  public void setup() {
    tokens = new Random(1).ints(TOKENS, 0, 152_000).toArray();
    bytes = ByteBuffer.allocateDirect(TOKENS * 4).order(ByteOrder.LITTLE_ENDIAN);
    bytes.asIntBuffer().put(tokens);
  }

  @Benchmark
  public long[] hashPrompt128k() {
    return ChunkHasher.hashes(tokens, TOKENS, 256, false, Integer.MAX_VALUE);
  }

  @Benchmark
  public long crc32cSameBytes() {
    CRC32C c = new CRC32C();
    c.update(bytes.duplicate());
    return c.getValue();
  }
}
