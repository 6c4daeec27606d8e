package io.kvtier.memory;

import static io.kvtier.Checks.checkPositive;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.util.Locale;

/**
 * Host memory from anonymous private {@code mmap} mappings, through FFM downcalls: page-aligned,
 * zero-filled by the kernel on first touch, nothing touched up front. Linux and macOS.
 *
 * <p>Thread-safe and stateless apart from the method handles.
 */
public final class MmapAllocator implements HostAllocator {
  private static final int PROT_READ = 0x1;
  private static final int PROT_WRITE = 0x2;
  private static final int MAP_PRIVATE = 0x02;

  /** {@code MAP_ANONYMOUS}: 0x20 on Linux, 0x1000 ({@code MAP_ANON}) on macOS/BSD. */
  private static final int MAP_ANONYMOUS =
      System.getProperty("os.name").toLowerCase(Locale.ROOT).contains("mac") ? 0x1000 : 0x20;

  private static final long MAP_FAILED = -1L;

  private static final Linker.Option ERRNO = Linker.Option.captureCallState("errno");
  private static final StructLayout CALL_STATE = Linker.Option.captureStateLayout();
  private static final VarHandle ERRNO_HANDLE =
      CALL_STATE.varHandle(java.lang.foreign.MemoryLayout.PathElement.groupElement("errno"));

  /** The shared instance (declared after the constants its constructor reads). */
  public static final MmapAllocator INSTANCE = new MmapAllocator();

  /** {@code MADV_POPULATE_WRITE} (Linux 5.14+): fault pages in writable, contents unchanged. */
  private static final int MADV_POPULATE_WRITE = 23;

  /** Bytes {@link #prefault} populates per call. */
  private static final long PREFAULT_PIECE = 4L << 20;

  private final MethodHandle mmap;
  private final MethodHandle munmap;
  private final MethodHandle madvise;

  @SuppressWarnings("restricted") // downcalls to libc mmap/munmap, the purpose of this class
  private MmapAllocator() {
    Linker linker = Linker.nativeLinker();
    var libc = linker.defaultLookup();
    mmap =
        linker.downcallHandle(
            libc.find("mmap").orElseThrow(),
            FunctionDescriptor.of(
                ValueLayout.ADDRESS,
                ValueLayout.ADDRESS,
                ValueLayout.JAVA_LONG,
                ValueLayout.JAVA_INT,
                ValueLayout.JAVA_INT,
                ValueLayout.JAVA_INT,
                ValueLayout.JAVA_LONG),
            ERRNO);
    munmap =
        linker.downcallHandle(
            libc.find("munmap").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG),
            ERRNO);
    madvise =
        linker.downcallHandle(
            libc.find("madvise").orElseThrow(),
            FunctionDescriptor.of(
                ValueLayout.JAVA_INT,
                ValueLayout.ADDRESS,
                ValueLayout.JAVA_LONG,
                ValueLayout.JAVA_INT));
  }

  /**
   * Populates the mapping's page tables with {@code madvise(MADV_POPULATE_WRITE)}, which allocates
   * zero pages where none exist and leaves written pages alone, so it is safe while other threads
   * write into the segment. On kernels without it (EINVAL) or macOS this does nothing.
   */
  @Override
  public void prefault(MemorySegment segment) {
    if (MAP_ANONYMOUS != 0x20) {
      return; // not Linux
    }
    try {
      // Piece by piece: the kernel holds the process's memory-map lock for each call, and a whole
      // slab at once (seconds on some VMs, where a first touch is slow) would stall every other
      // thread's page faults and mappings behind it.
      for (long at = 0; at < segment.byteSize(); at += PREFAULT_PIECE) {
        long n = Math.min(PREFAULT_PIECE, segment.byteSize() - at);
        int rc = (int) madvise.invokeExact(segment.asSlice(at, n), n, MADV_POPULATE_WRITE);
        if (rc != 0) {
          return; // older kernel or the mapping went away: first touches fault as before
        }
      }
    } catch (Throwable t) {
      // a failed hint costs only the page faults it would have saved
    }
  }

  @Override
  @SuppressWarnings("restricted") // reinterpret: the mapping is exactly byteCount long
  public MemorySegment allocate(long byteCount) {
    checkPositive(byteCount, "byteCount");
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment state = arena.allocate(CALL_STATE);
      MemorySegment p =
          (MemorySegment)
              mmap.invokeExact(
                  state,
                  MemorySegment.NULL,
                  byteCount,
                  PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS,
                  -1,
                  0L);
      if (p.address() == MAP_FAILED || p.address() == 0) {
        int errno = (int) ERRNO_HANDLE.get(state, 0L);
        throw new OutOfMemoryError(
            "mmap of " + byteCount + " bytes failed with errno " + errno + " (12 = ENOMEM)");
      }
      return p.reinterpret(byteCount);
    } catch (OutOfMemoryError | RuntimeException e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("mmap downcall failed", t);
    }
  }

  @Override
  public void free(MemorySegment segment) {
    int rc;
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment state = arena.allocate(CALL_STATE);
      rc = (int) munmap.invokeExact(state, segment, segment.byteSize());
      if (rc != 0) {
        throw new IllegalStateException(
            "munmap of "
                + segment.byteSize()
                + " bytes at 0x"
                + Long.toHexString(segment.address())
                + " failed with errno "
                + (int) ERRNO_HANDLE.get(state, 0L));
      }
    } catch (RuntimeException e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("munmap downcall failed", t);
    }
  }

  @Override
  public String name() {
    return "mmap";
  }
}
