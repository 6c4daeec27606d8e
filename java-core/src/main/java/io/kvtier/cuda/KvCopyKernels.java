package io.kvtier.cuda;

import static io.kvtier.cuda.Cuda.check;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Arrays;
import jcuda.Pointer;
import jcuda.driver.CUfunction;
import jcuda.driver.CUmodule;
import jcuda.driver.CUstream;
import jcuda.driver.JCudaDriver;

/**
 * The gather and scatter kernels of {@code kv_copy.ptx} (built from {@code
 * java-core/src/main/cuda/kv_copy.cu}), loaded into the current context.
 */
final class KvCopyKernels {
  /** The PTX resource. */
  static final String RESOURCE = "/io/kvtier/cuda/kv_copy.ptx";

  /** Vector widths the kernels come in, in bytes. */
  static final int[] WIDTHS = {1, 2, 4, 8, 16};

  private final CUmodule module = new CUmodule();
  private final CUfunction[] gather = new CUfunction[17];
  private final CUfunction[] scatter = new CUfunction[17];

  /** Loads the module; the driver JIT-compiles the PTX for the current device. */
  KvCopyKernels() {
    check(JCudaDriver.cuModuleLoadData(module, ptx()), "cuModuleLoadData(" + RESOURCE + ")");
    for (int w : WIDTHS) {
      gather[w] = function("kvtier_gather_" + w);
      scatter[w] = function("kvtier_scatter_" + w);
    }
  }

  /** The PTX text, NUL-terminated as {@code cuModuleLoadData} wants it. */
  static byte[] ptx() {
    try (InputStream in = KvCopyKernels.class.getResourceAsStream(RESOURCE)) {
      if (in == null) {
        throw new IllegalStateException(RESOURCE + " is missing from the kvtier jar");
      }
      byte[] text = in.readAllBytes();
      return Arrays.copyOf(text, text.length + 1);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  private CUfunction function(String name) {
    CUfunction f = new CUfunction();
    check(JCudaDriver.cuModuleGetFunction(f, module, name), "cuModuleGetFunction(" + name + ")");
    return f;
  }

  /**
   * Enqueues one launch on {@code stream}.
   *
   * @param layers device address of the layer base-address table
   * @param slots device address of {@code a.count()} int64 slots
   * @param chunks device address of the chunk address table
   */
  void launch(
      boolean toCache, KvCopyArgs a, long layers, long slots, long chunks, CUstream stream) {
    CUfunction f = (toCache ? scatter : gather)[a.vectorWidth()];
    Pointer params =
        Pointer.to(
            Pointer.to(new long[] {layers}),
            Pointer.to(new long[] {slots}),
            Pointer.to(new long[] {chunks}),
            Pointer.to(new int[] {a.firstLayer()}),
            Pointer.to(new int[] {a.kvCount()}),
            Pointer.to(new long[] {a.kvStride()}),
            Pointer.to(new long[] {a.blockStride()}),
            Pointer.to(new long[] {a.slotStride()}),
            Pointer.to(new long[] {a.headStride()}),
            Pointer.to(new int[] {a.numHeads()}),
            Pointer.to(new int[] {a.headRow()}),
            Pointer.to(new int[] {a.blockSize()}),
            Pointer.to(new int[] {a.rowTokens()}),
            Pointer.to(new int[] {a.skip()}),
            Pointer.to(new int[] {a.headMajor() ? 1 : 0}));
    check(
        JCudaDriver.cuLaunchKernel(
            f, a.count(), a.gridY(), 1, a.threads(), 1, 1, 0, stream, params, null),
        "cuLaunchKernel(" + (toCache ? "scatter" : "gather") + ")");
  }

  void unload() {
    JCudaDriver.cuModuleUnload(module);
  }
}
