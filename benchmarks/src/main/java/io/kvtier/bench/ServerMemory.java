package io.kvtier.bench;

import io.kvtier.config.CachePolicy;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkAllocator;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.memory.SizeClassPools;
import io.kvtier.store.CpuStore;
import java.util.Locale;
import java.util.Random;
import java.util.function.Supplier;

/**
 * How much of the cache server's memory budget holds values, for the chunk mixes of a small model
 * and of Llama-3-8B: prompts of 1 to 8 whole chunks and a last, partial chunk of 0 to 15 blocks,
 * put through the server's CPU tier (W-TinyLFU) until three budgets' worth went in. Compares the
 * former fixed slots of {@code --max-value-mb} (64 MiB by default; 32 MiB, the largest chunk, as
 * the README advised) with size classes. Nothing is written into the values: the accounting is what
 * is measured, so it runs in a second whatever the budget.
 *
 * <p>Run: {@code java --enable-native-access=ALL-UNNAMED -cp <benchmarks jar and lib>
 * io.kvtier.bench.ServerMemory [budget GiB, default 8]}.
 */
public final class ServerMemory {
  private ServerMemory() {}

  record Model(String name, long bytesPerToken) {
    long chunk() {
      return 256 * bytesPerToken;
    }

    long block() {
      return 16 * bytesPerToken;
    }
  }

  public static void main(String[] args) {
    long budget = (long) (Double.parseDouble(args.length > 0 ? args[0] : "8") * (1L << 30));
    long max = 64L << 20;
    Model[] models = {
      new Model("small model (24 layers, 2 KV heads of 64, bf16: 12 KiB/token)", 12L << 10),
      new Model("Llama-3-8B (32 layers, 8 KV heads of 128, bf16: 128 KiB/token)", 128L << 10),
    };
    System.out.printf(
        Locale.ROOT, "budget %.1f GiB, largest value 64 MiB%n", budget / 1073741824.0);
    for (Model m : models) {
      System.out.println(m.name());
      run(m, budget, "fixed 64 MiB slots", () -> fixed(max, budget));
      run(m, budget, "fixed 32 MiB slots", () -> fixed(32L << 20, budget));
      run(m, budget, "size classes", () -> new SizeClassPools(MmapAllocator.INSTANCE, budget, max));
    }
  }

  static ChunkAllocator fixed(long slot, long budget) {
    return new ChunkPool(MmapAllocator.INSTANCE, slot, budget, ChunkPool.DEFAULT_SLAB_BYTES);
  }

  static void run(Model m, long budget, String what, Supplier<ChunkAllocator> make) {
    ChunkAllocator alloc = make.get();
    CpuStore store = new CpuStore(alloc, budget, CachePolicy.TINYLFU);
    Random r = new Random(1);
    long put = 0;
    long refused = 0;
    int prompt = 0;
    while (put < 3 * budget) {
      int chunks = 1 + r.nextInt(8);
      int tail = r.nextInt(16);
      for (int c = 0; c <= chunks; c++) {
        long length = c < chunks ? m.chunk() : tail * m.block();
        if (length == 0 || length > alloc.maxBytes()) {
          refused += length == 0 ? 0 : 1;
          continue;
        }
        ChunkBuffer b = store.allocate(length);
        if (b == null) {
          refused++;
          continue;
        }
        store.put(new ChunkKey(1, prompt, c), b);
        b.release();
        put += length;
      }
      prompt++;
    }
    var stats = store.stats();
    System.out.printf(
        Locale.ROOT,
        "  %-20s %6d values held, %5.1f %% of the budget holds values%s%n",
        what,
        stats.entries(),
        100.0 * stats.bytes() / budget,
        refused > 0 ? " (" + refused + " values refused)" : "");
    store.close();
    try {
      ((AutoCloseable) alloc).close();
    } catch (Exception e) {
      throw new IllegalStateException(e);
    }
  }
}
