package io.kvtier.cuda;

import jcuda.driver.CUresult;
import jcuda.driver.JCudaDriver;

/**
 * Answers whether the CUDA driver can be used in this process, and if not, why.
 *
 * <p>Thread-safe; the probe runs once per process (the first call initialises the driver through
 * {@code cuInit}) and its answer is cached.
 */
public final class CudaProbe {
  /** Whether CUDA can be used, and a one-line reason when it cannot. */
  public record Availability(boolean available, int deviceCount, String reason) {}

  private CudaProbe() {}

  /** Returns the cached probe result; the first call may take a few hundred milliseconds. */
  public static Availability availability() {
    return Holder.RESULT;
  }

  private static final class Holder {
    static final Availability RESULT = probe();
  }

  private static Availability probe() {
    try {
      JCudaDriver.setExceptionsEnabled(false);
      int rc = JCudaDriver.cuInit(0);
      if (rc != CUresult.CUDA_SUCCESS) {
        return new Availability(false, 0, "cuInit failed: " + CUresult.stringFor(rc));
      }
      int[] count = new int[1];
      rc = JCudaDriver.cuDeviceGetCount(count);
      if (rc != CUresult.CUDA_SUCCESS) {
        return new Availability(false, 0, "cuDeviceGetCount failed: " + CUresult.stringFor(rc));
      }
      if (count[0] == 0) {
        return new Availability(false, 0, "the CUDA driver reports no devices");
      }
      return new Availability(true, count[0], "");
    } catch (UnsatisfiedLinkError | NoClassDefFoundError e) {
      // No libcuda.so.1 on this machine (or JCuda's own native library missing from the jar).
      return new Availability(false, 0, "CUDA driver library not loadable: " + rootCause(e));
    }
  }

  /**
   * JCuda's link errors carry the nested stack traces of each load attempt; the useful line is the
   * dynamic linker's (e.g. {@code libcuda.so.1: cannot open shared object file}).
   */
  static String rootCause(Throwable e) {
    String message = String.valueOf(e.getMessage());
    for (String line : message.split("\\R")) {
      if (line.contains("cannot open shared object file") || line.contains("undefined symbol")) {
        int colon = line.indexOf(": ");
        return colon >= 0 ? line.substring(colon + 2).trim() : line.trim();
      }
    }
    return message.lines().findFirst().orElse(message);
  }
}
