package io.kvtier.bench;

import io.kvtier.config.CachePolicy;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.HostMemory;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.store.CpuStore;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
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
 * CpuStore get of one 256-token chunk, copied out to a destination buffer, against a plain copy of
 * the same bytes from the same slot to the same destination; both on one thread.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
public class CpuStoreBench {
  @Param({"LLAMA_8B", "SMALL"})
  public Geometry geometry;

  ChunkPool pool;
  CpuStore store;
  Arena arena;
  MemorySegment dst;
  MemorySegment slot;
  long bytes;
  final ChunkKey key = new ChunkKey(1, 2, 3);

  @Setup(Level.Trial)
  public void setup() {
    bytes = geometry.chunkBytes(256);
    pool = new ChunkPool(MmapAllocator.INSTANCE, bytes, 4 * bytes, 4 * bytes);
    store = new CpuStore(pool, 4 * bytes, CachePolicy.TINYLFU);
    ChunkBuffer b = store.allocate(bytes);
    b.segment().fill((byte) 7);
    store.put(key, b);
    b.release();
    arena = Arena.ofShared();
    dst = arena.allocate(bytes, 4096);
    dst.fill((byte) 1); // fault the pages in before timing
    ChunkBuffer held = store.get(key);
    slot = held.segment();
    held.release();
  }

  @TearDown(Level.Trial)
  public void tearDown() {
    store.close();
    pool.close();
    arena.close();
  }

  /** What a load does: look the chunk up, hold it, copy it out by address, let go. */
  @Benchmark
  public void getAndCopyOut() {
    ChunkBuffer b = store.get(key);
    HostMemory.copy(b.address(), dst.address(), bytes);
    b.release();
  }

  /** The same copy, same source slot, same destination, same code path, without the store. */
  @Benchmark
  public void plainCopy() {
    HostMemory.copy(slot.address(), dst.address(), bytes);
  }
}
