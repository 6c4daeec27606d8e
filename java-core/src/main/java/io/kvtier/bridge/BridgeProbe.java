package io.kvtier.bridge;

import io.kvtier.memory.HostMemory;

/**
 * Start-up checks and a call-cost probe for the Python bridge.
 *
 * <p>Stateless and thread-safe.
 */
public final class BridgeProbe {
  private BridgeProbe() {}

  /**
   * Prints one line on what this JVM can do: kvtier and Java versions, and whether CUDA is usable.
   * Run with the flags the Python side uses ({@code -Xrs --enable-native-access=ALL-UNNAMED}).
   */
  public static void main(String[] args) {
    var cuda = io.kvtier.cuda.CudaProbe.availability();
    try (var arena = java.lang.foreign.Arena.ofConfined()) {
      var a = arena.allocate(1 << 20);
      var b = arena.allocate(1 << 20);
      HostMemory.fillPattern(a.address(), a.byteSize(), 7);
      HostMemory.copy(a.address(), b.address(), a.byteSize());
      if (HostMemory.crc32(a.address(), a.byteSize())
          != HostMemory.crc32(b.address(), b.byteSize())) {
        System.err.println("kvtier: host copy self-check failed");
        System.exit(1);
      }
    }
    System.out.println(
        "kvtier "
            + version()
            + " on Java "
            + Runtime.version()
            + "; host copy ok; CUDA: "
            + (cuda.available()
                ? cuda.deviceCount() + " device(s)"
                : "unavailable (" + cuda.reason() + ")"));
  }

  /** The kvtier core version, from the jar manifest; {@code "dev"} when run from classes. */
  public static String version() {
    String v = BridgeProbe.class.getPackage().getImplementationVersion();
    return v == null ? "dev" : v;
  }

  /** The feature version of the running JVM, e.g. 25. */
  public static int javaFeatureVersion() {
    return Runtime.version().feature();
  }

  /**
   * Returns {@code a + b + c}. Exists to measure the cost of one Python→Java call with a few
   * primitive arguments; the sum keeps the call from being trivially dead on either side.
   */
  public static long ping(int a, long b, long c) {
    return a + b + c;
  }

  /**
   * Always throws; lets the Python side check that a Java exception reaches it with its class and
   * message.
   *
   * @throws IllegalArgumentException always, with {@code message}
   */
  public static void fail(String message) {
    throw new IllegalArgumentException(message);
  }
}
