package io.kvtier.memory;

import static io.kvtier.Checks.checkAddress;
import static io.kvtier.Checks.checkNonNegative;
import static io.kvtier.Checks.checkPositive;

import io.kvtier.DaemonThreads;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.zip.CRC32;

/**
 * Reads and writes host memory owned by the caller (a numpy array, a torch CPU tensor, a pinned
 * buffer) through FFM views, without copying it into the Java heap.
 *
 * <p>Ownership: the caller owns every buffer passed by address and must keep it alive and unmoved
 * for the duration of the call; no view escapes a call. Addresses are trusted: a wrong address or
 * length reaches the memory it names (the checks below catch zero addresses and negative lengths
 * only), exactly as a C extension would.
 *
 * <p>Thread-safe: methods are stateless apart from the shared copy pool, which is created on first
 * use with one daemon thread per available processor ({@code kvtier-copy-N}).
 */
public final class HostMemory {
  /** Slice granularity for parallel copies, in bytes; slices start on page boundaries. */
  private static final long PARALLEL_SLICE_ALIGN_BYTES = 4096;

  /** Copies below this size run on the calling thread even when more threads are asked for. */
  private static final long PARALLEL_MIN_BYTES = 4L << 20;

  /** {@link CRC32} takes a ByteBuffer, which holds at most 2 GiB; larger spans go in slices. */
  private static final long CRC_SLICE_BYTES = 1L << 30;

  private HostMemory() {}

  /**
   * Views {@code byteCount} bytes at {@code address}. Does not copy, allocate native memory or
   * block.
   *
   * @throws IllegalArgumentException if {@code address} is 0 or {@code byteCount} is negative
   */
  @SuppressWarnings("restricted") // viewing caller-owned native memory is this method's purpose
  public static MemorySegment view(long address, long byteCount) {
    checkAddress(address, "address");
    checkNonNegative(byteCount, "byteCount");
    return MemorySegment.ofAddress(address).reinterpret(byteCount);
  }

  /**
   * Copies {@code byteCount} bytes from {@code srcAddress} to {@code dstAddress} on the calling
   * thread. Overlapping ranges are handled as by {@code memmove}. Blocks until done.
   *
   * @throws IllegalArgumentException if an address is 0 or {@code byteCount} is negative
   */
  public static void copy(long srcAddress, long dstAddress, long byteCount) {
    MemorySegment.copy(view(srcAddress, byteCount), 0, view(dstAddress, byteCount), 0, byteCount);
  }

  /**
   * Copies like {@link #copy} but split over up to {@code threads} threads of the shared copy pool.
   * The ranges must not overlap. Blocks until every slice is done.
   *
   * @throws IllegalArgumentException if an address is 0, {@code byteCount} is negative, {@code
   *     threads <= 0}, or the ranges overlap
   * @throws IllegalStateException if the calling thread is interrupted (the interrupt flag is
   *     restored; some slices may already have been copied)
   */
  public static void copyParallel(long srcAddress, long dstAddress, long byteCount, int threads) {
    checkPositive(threads, "threads");
    MemorySegment src = view(srcAddress, byteCount);
    MemorySegment dst = view(dstAddress, byteCount);
    if (srcAddress < dstAddress + byteCount && dstAddress < srcAddress + byteCount) {
      throw new IllegalArgumentException(
          "copyParallel needs disjoint ranges; src=0x"
              + Long.toHexString(srcAddress)
              + " dst=0x"
              + Long.toHexString(dstAddress)
              + " byteCount="
              + byteCount);
    }
    int slices = (int) Math.min(threads, Math.max(1, byteCount / PARALLEL_MIN_BYTES));
    if (slices == 1) {
      MemorySegment.copy(src, 0, dst, 0, byteCount);
      return;
    }
    long sliceBytes = alignUp(Math.ceilDiv(byteCount, slices), PARALLEL_SLICE_ALIGN_BYTES);
    List<Runnable> tasks = new ArrayList<>(slices);
    for (long offset = 0; offset < byteCount; offset += sliceBytes) {
      long from = offset;
      long length = Math.min(sliceBytes, byteCount - from);
      tasks.add(() -> MemorySegment.copy(src, from, dst, from, length));
    }
    runParallel(tasks.toArray(new Runnable[0]));
  }

  /**
   * Returns the CRC-32 (the zlib polynomial, as Python's {@code zlib.crc32}) of {@code byteCount}
   * bytes at {@code address}. Reads only; blocks until done.
   *
   * @throws IllegalArgumentException if {@code address} is 0 or {@code byteCount} is negative
   */
  public static long crc32(long address, long byteCount) {
    MemorySegment segment = view(address, byteCount);
    CRC32 crc = new CRC32();
    for (long offset = 0; offset < byteCount; offset += CRC_SLICE_BYTES) {
      long length = Math.min(CRC_SLICE_BYTES, byteCount - offset);
      crc.update(segment.asSlice(offset, length).asByteBuffer());
    }
    return crc.getValue();
  }

  /**
   * Writes the test pattern {@code byte[i] = (byte) (i * 131 + seed)} over {@code byteCount} bytes
   * at {@code address}; the Python tests compute the same pattern to check writes byte for byte.
   *
   * @throws IllegalArgumentException if {@code address} is 0 or {@code byteCount} or {@code seed}
   *     is negative
   */
  public static void fillPattern(long address, long byteCount, long seed) {
    checkNonNegative(seed, "seed");
    MemorySegment segment = view(address, byteCount);
    for (long i = 0; i < byteCount; i++) {
      segment.set(ValueLayout.JAVA_BYTE, i, (byte) (i * 131 + seed));
    }
  }

  /**
   * Runs {@code tasks} at once, the first on the calling thread and the others on the shared copy
   * pool, and returns when all are done. A task's {@link RuntimeException} is rethrown (the first
   * one in task order) after all have finished. Must not be called from a copy-pool thread.
   *
   * @throws IllegalStateException if the calling thread is interrupted (the flag is restored)
   */
  public static void runParallel(Runnable[] tasks) {
    List<Future<?>> pending = new ArrayList<>(tasks.length);
    for (int i = 1; i < tasks.length; i++) {
      pending.add(CopyPool.EXECUTOR.submit(tasks[i]));
    }
    RuntimeException first = null;
    try {
      if (tasks.length > 0) {
        tasks[0].run();
      }
    } catch (RuntimeException e) {
      first = e;
    }
    for (Future<?> f : pending) {
      try {
        f.get();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        pending.forEach(p -> p.cancel(false));
        throw new IllegalStateException("interrupted while waiting for parallel copies", e);
      } catch (ExecutionException e) {
        if (first == null) {
          first =
              e.getCause() instanceof RuntimeException r
                  ? r
                  : new IllegalStateException("a parallel copy failed", e.getCause());
        }
      }
    }
    if (first != null) {
      throw first;
    }
  }

  private static long alignUp(long value, long alignment) {
    return (value + alignment - 1) / alignment * alignment;
  }

  /** Holder for the lazily created copy pool (initialised on first parallel copy). */
  private static final class CopyPool {
    /** Copy slices waiting at most; beyond it a slice runs on the thread that submitted it. */
    static final int QUEUE = 1024;

    static final ExecutorService EXECUTOR = newPool();

    /**
     * One thread per core and a bounded queue. Its rejection runs the slice on the caller's thread
     * (caller-runs): every caller waits for its slices anyway, so a full queue turns into the
     * caller copying, never into an unbounded backlog or a dropped copy.
     */
    private static ExecutorService newPool() {
      int threads = Runtime.getRuntime().availableProcessors();
      return new ThreadPoolExecutor(
          threads,
          threads,
          0,
          TimeUnit.MILLISECONDS,
          new ArrayBlockingQueue<>(QUEUE),
          DaemonThreads.numbered("kvtier-copy-"),
          new ThreadPoolExecutor.CallerRunsPolicy());
    }
  }
}
