package io.kvtier.bench;

import io.kvtier.transfer.HostKvTransfer;
import io.kvtier.transfer.PagedKvCache;
import io.kvtier.transfer.PagedLayout;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Random;

/**
 * Gather and scatter of one 256-token chunk in Llama-3.1-8B geometry (32 layers, 8 KV heads, head
 * size 128, bf16: 32 MiB) between per-layer paged caches in host memory and a chunk, against one
 * plain copy of the same 32 MiB, same run, one thread, median of 30 after warm-up, each operation
 * starting with cold caches (1 GiB written before it). Layouts: NHD and HND with 16-token blocks
 * (64 per layer), and vLLM's CPU backend order with 64-token blocks (16 per layer); blocks in
 * random order, as vLLM allocates them.
 *
 * <p>A second baseline, the <em>run copy</em>, copies the same 32 MiB as plain copies of the runs a
 * gather of that layout reads (one block of one head, or of all heads for NHD), taken from shuffled
 * places: the same memory access pattern without any of kvtier's code. A gather close to the run
 * copy leaves nothing to gain in the mover; what separates the run copy from the long one is the
 * memory system's cost of short, scattered runs from cold memory.
 *
 * <p>Run: {@code scripts/bench-gather}.
 */
public final class GatherBench {
  /** Bytes written between timed operations to push their data out of every cache level. */
  private static final long FLUSH_BYTES = 1L << 30;

  private GatherBench() {}

  public static void main(String[] args) {
    int layers = 32;
    int tokens = 256;
    int reps = 30;
    System.out.println("host gather/scatter, Llama-3.1-8B geometry, 256 tokens (32 MiB)");
    for (String name : new String[] {"NHD", "HND", "CPU"}) {
      PagedLayout l =
          switch (name) {
            case "NHD" -> PagedLayout.flashAttnNhd(64, 16, 8, 128, 2);
            case "HND" -> PagedLayout.flashAttnHnd(64, 16, 8, 128, 2);
            default -> PagedLayout.cpuBackend(16, 64, 8, 128, 2); // vLLM CPU_ATTN, block 64
          };
      try (Arena arena = Arena.ofShared()) {
        MemorySegment[] caches = new MemorySegment[layers];
        for (int i = 0; i < layers; i++) {
          caches[i] = arena.allocate(l.tensorBytes(), 4096);
          caches[i].fill((byte) i);
        }
        long chunkBytes = layers * tokens * l.tokenBytes();
        MemorySegment chunk = arena.allocate(chunkBytes, 4096);
        MemorySegment src = arena.allocate(chunkBytes, 4096);
        chunk.fill((byte) 1);
        src.fill((byte) 2);
        List<Integer> blocks = new ArrayList<>();
        for (int b = 0; b < l.numBlocks(); b++) {
          blocks.add(b);
        }
        Collections.shuffle(blocks, new Random(3));
        long[] slots = new long[tokens];
        for (int t = 0; t < tokens; t++) {
          slots[t] = (long) blocks.get(t / l.blockSize()) * l.blockSize() + t % l.blockSize();
        }
        // Every timed operation starts with its data out of the caches: this VM's last-level
        // cache (480 MiB here) holds the whole working set, so without this the order of the
        // operations decides what each one finds in cache.
        MemorySegment flush = arena.allocate(FLUSH_BYTES, 4096);
        double[] gather = new double[reps];
        double[] scatter = new double[reps];
        double[] copy = new double[reps];
        double[] runCopy = new double[reps];
        long run =
            (long) l.blockSize()
                * l.headSize()
                * l.elementBytes()
                * (name.equals("NHD") ? l.numHeads() : 1);
        int pieces = (int) (chunkBytes / run);
        List<Integer> order = new ArrayList<>();
        for (int i = 0; i < pieces; i++) {
          order.add(i);
        }
        Collections.shuffle(order, new Random(5));
        long[] from = order.stream().mapToLong(i -> i * run).toArray();
        for (int r = -5; r < reps; r++) {
          flush.fill((byte) r);
          long t0 = System.nanoTime();
          for (int i = 0; i < layers; i++) {
            HostKvTransfer.gather(
                caches[i], l, slots, 0, tokens, chunk, i * tokens * l.tokenBytes());
          }
          long t1 = System.nanoTime();
          flush.fill((byte) (r + 1));
          long t2 = System.nanoTime();
          for (int i = 0; i < layers; i++) {
            HostKvTransfer.scatter(
                chunk, i * tokens * l.tokenBytes(), l, slots, 0, tokens, caches[i]);
          }
          long t3 = System.nanoTime();
          flush.fill((byte) (r + 2));
          long t4 = System.nanoTime();
          MemorySegment.copy(src, 0, chunk, 0, chunkBytes);
          long t5 = System.nanoTime();
          flush.fill((byte) (r + 3));
          long t6 = System.nanoTime();
          for (int i = 0; i < pieces; i++) {
            MemorySegment.copy(src, from[i], chunk, i * run, run);
          }
          long t7 = System.nanoTime();
          if (r >= 0) {
            gather[r] = (t1 - t0) / 1e6;
            scatter[r] = (t3 - t2) / 1e6;
            copy[r] = (t5 - t4) / 1e6;
            runCopy[r] = (t7 - t6) / 1e6;
          }
        }
        // The same chunk through PagedKvCache, layers split over two threads, as kvtier's vLLM
        // worker moves whole chunks.
        int[] blockIds = new int[tokens / l.blockSize()];
        for (int b = 0; b < blockIds.length; b++) {
          blockIds[b] = blocks.get(b);
        }
        PagedKvCache paged = new PagedKvCache(caches, l, 2);
        double[] gather2 = new double[reps];
        double[] scatter2 = new double[reps];
        for (int r = -5; r < reps; r++) {
          flush.fill((byte) r);
          long t0 = System.nanoTime();
          paged.gather(blockIds, 0, tokens, chunk);
          long t1 = System.nanoTime();
          flush.fill((byte) (r + 1));
          long t2 = System.nanoTime();
          paged.scatter(chunk, tokens, blockIds, 0, 0, tokens);
          long t3 = System.nanoTime();
          if (r >= 0) {
            gather2[r] = (t1 - t0) / 1e6;
            scatter2[r] = (t3 - t2) / 1e6;
          }
        }
        double g = median(gather);
        double s = median(scatter);
        double c = median(copy);
        System.out.printf(
            Locale.ROOT,
            "  %s gather  %.2f ms (%.1f GB/s)   plain copy %.2f ms   %.2fx %s >= 0.8x%n",
            name,
            g,
            chunkBytes / g / 1e6,
            c,
            c / g,
            c / g >= 0.8 ? "MET" : "MISSED");
        System.out.printf(
            Locale.ROOT,
            "  %s scatter %.2f ms (%.1f GB/s)   plain copy %.2f ms   %.2fx %s >= 0.8x%n",
            name,
            s,
            chunkBytes / s / 1e6,
            c,
            c / s,
            c / s >= 0.8 ? "MET" : "MISSED");
        double rc = median(runCopy);
        System.out.printf(
            Locale.ROOT,
            "  %s run copy (%d KiB runs, shuffled) %.2f ms   %.2fx of the plain copy;"
                + " gather %.2fx, scatter %.2fx of the run copy%n",
            name,
            run / 1024,
            rc,
            c / rc,
            rc / g,
            rc / s);
        for (String dir : new String[] {"gather", "scatter"}) {
          double v = median(dir.equals("gather") ? gather2 : scatter2);
          System.out.printf(
              Locale.ROOT,
              "  %s %-7s 2 threads %.2f ms (%.1f GB/s)   plain copy %.2f ms   %.2fx %s >= 0.8x%n",
              name,
              dir,
              v,
              chunkBytes / v / 1e6,
              c,
              c / v,
              c / v >= 0.8 ? "MET" : "MISSED");
        }
      }
    }
  }

  private static double median(double[] v) {
    double[] c = v.clone();
    Arrays.sort(c);
    return c[c.length / 2];
  }
}
