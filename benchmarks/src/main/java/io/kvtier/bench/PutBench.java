package io.kvtier.bench;

import io.kvtier.config.CachePolicy;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.store.CpuStore;
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
 * The bookkeeping of storing one chunk, without the data copy (the data movers write straight into
 * the slot): allocate a slot, put it under a new key, drop the caller's reference. The store is
 * full, so every put also evicts one chunk and returns its slot: the steady state of a busy server.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class PutBench {
  static final long SLOT_BYTES = 4096;
  static final int SLOTS = 4096;

  @Param({"TINYLFU", "LRU"})
  public CachePolicy policy;

  ChunkPool pool;
  CpuStore store;
  long next;

  @Setup(Level.Trial)
  public void setup() {
    pool = new ChunkPool(MmapAllocator.INSTANCE, SLOT_BYTES, SLOTS * SLOT_BYTES, 1 << 24);
    store = new CpuStore(pool, SLOTS * SLOT_BYTES, policy);
    for (int i = 0; i < 2 * SLOTS; i++) {
      putOne();
    }
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    store.close();
    pool.close();
  }

  @Benchmark
  public boolean putOne() {
    ChunkBuffer b = store.allocate(SLOT_BYTES);
    boolean stored = store.put(new ChunkKey(9, next, ~next), b);
    next++;
    b.release();
    return stored;
  }
}
