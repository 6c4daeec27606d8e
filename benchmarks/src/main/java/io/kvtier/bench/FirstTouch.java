package io.kvtier.bench;

import io.kvtier.memory.MmapAllocator;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * How long this machine takes to write memory for the first time, one GiB after another, all kept
 * mapped: on a VM whose host backs guest memory lazily, the GiBs beyond what the guest has touched
 * since boot cost far more than the rest (docs/benchmarks.md, "Fresh memory on this VM").
 *
 * <p>Run: {@code java --enable-native-access=ALL-UNNAMED -cp <benchmarks jar and lib>
 * io.kvtier.bench.FirstTouch [GiB, default 8]}.
 */
public final class FirstTouch {
  private FirstTouch() {}

  public static void main(String[] args) {
    int gib = args.length > 0 ? Integer.parseInt(args[0]) : 8;
    List<MemorySegment> kept = new ArrayList<>();
    for (int i = 0; i < gib; i++) {
      MemorySegment s = MmapAllocator.INSTANCE.allocate(1L << 30);
      long t0 = System.nanoTime();
      s.fill((byte) 1);
      System.out.printf(
          Locale.ROOT,
          "GiB %d written for the first time in %.0f ms%n",
          i,
          (System.nanoTime() - t0) / 1e6);
      kept.add(s);
    }
    kept.forEach(MmapAllocator.INSTANCE::free);
  }
}
