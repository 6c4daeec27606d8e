package io.kvtier;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.util.BitSet;
import java.util.Locale;

/**
 * The CPUs kvtier's own threads run on, set when each of them starts.
 *
 * <p>A thread inherits the CPU affinity of the thread that creates it. Inside vLLM's CPU worker
 * that is often the OpenMP master thread, which vLLM binds to a single compute core: every thread
 * kvtier started from it (copies, disk I/O, the lookup server) would share that one core with the
 * model while the cores vLLM keeps free for a KV connector stayed idle. The embedding process names
 * the CPUs for kvtier in the system property {@value #PROPERTY} (a Linux CPU list such as {@code
 * 30-31} or {@code 0,2,4-7}), and each thread from {@link DaemonThreads} (or wrapped by {@link
 * #wrap}) sets its own affinity to them with {@code sched_setaffinity} when it starts.
 *
 * <p>Without the property, or off Linux, threads keep the affinity they inherit. A list the kernel
 * refuses (no allowed CPU in it) changes nothing. Thread-safe.
 */
public final class CpuAffinity {
  /** System property naming kvtier's CPUs. */
  public static final String PROPERTY = "kvtier.cpus";

  /** Bytes of the mask passed to the kernel: 1024 CPUs, glibc's {@code cpu_set_t}. */
  private static final int MASK_BYTES = 128;

  private static final MethodHandle SET_AFFINITY = setAffinityHandle();
  private static final MemorySegment MASK = mask(fromProperty());

  private CpuAffinity() {}

  /**
   * Restricts the calling thread to kvtier's CPUs.
   *
   * @return whether the affinity was set (false: no CPUs named, not Linux, or the kernel refused)
   */
  public static boolean applyToCurrentThread() {
    if (MASK == null || SET_AFFINITY == null) {
      return false;
    }
    try {
      return (int) SET_AFFINITY.invokeExact(0, (long) MASK_BYTES, MASK) == 0;
    } catch (Throwable t) {
      return false;
    }
  }

  /** {@code task}, run after {@link #applyToCurrentThread()}: for threads made elsewhere. */
  public static Runnable wrap(Runnable task) {
    return () -> {
      applyToCurrentThread();
      task.run();
    };
  }

  /**
   * Parses a Linux CPU list ({@code 0-3,8,10-11}); null or blank gives an empty set.
   *
   * @throws IllegalArgumentException a malformed list or a CPU outside 0..1023
   */
  public static BitSet parse(String list) {
    BitSet cpus = new BitSet();
    if (list == null || list.isBlank()) {
      return cpus;
    }
    for (String part : list.trim().split(",")) {
      String p = part.trim();
      int dash = p.indexOf('-');
      try {
        int from = Integer.parseInt(dash < 0 ? p : p.substring(0, dash).trim());
        int to = dash < 0 ? from : Integer.parseInt(p.substring(dash + 1).trim());
        if (from < 0 || to < from || to >= MASK_BYTES * 8) {
          throw new IllegalArgumentException(
              String.format(
                  Locale.ROOT, "%s=%s: %s is not a range of CPUs 0..1023", PROPERTY, list, p));
        }
        cpus.set(from, to + 1);
      } catch (NumberFormatException e) {
        throw new IllegalArgumentException(
            String.format(Locale.ROOT, "%s=%s: %s is not a CPU number or range", PROPERTY, list, p),
            e);
      }
    }
    return cpus;
  }

  private static BitSet fromProperty() {
    try {
      return parse(System.getProperty(PROPERTY));
    } catch (IllegalArgumentException e) {
      System.getLogger(CpuAffinity.class.getName())
          .log(
              System.Logger.Level.WARNING,
              e.getMessage()
                  + "; kvtier's threads keep the CPUs of"
                  + " the threads that start them");
      return new BitSet();
    }
  }

  private static MemorySegment mask(BitSet cpus) {
    if (cpus.isEmpty()) {
      return null;
    }
    MemorySegment m = Arena.global().allocate(MASK_BYTES, 8);
    long[] words = cpus.toLongArray(); // little-endian bit order, as cpu_set_t on x86 and arm64
    for (int i = 0; i < words.length; i++) {
      m.setAtIndex(ValueLayout.JAVA_LONG, i, words[i]);
    }
    return m;
  }

  @SuppressWarnings("restricted") // a downcall to libc's sched_setaffinity, the purpose of this
  private static MethodHandle setAffinityHandle() {
    if (!System.getProperty("os.name", "").toLowerCase(Locale.ROOT).contains("linux")) {
      return null;
    }
    Linker linker = Linker.nativeLinker();
    return linker
        .defaultLookup()
        .find("sched_setaffinity")
        .map(
            f ->
                linker.downcallHandle(
                    f,
                    FunctionDescriptor.of(
                        ValueLayout.JAVA_INT,
                        ValueLayout.JAVA_INT,
                        ValueLayout.JAVA_LONG,
                        ValueLayout.ADDRESS)))
        .orElse(null);
  }
}
