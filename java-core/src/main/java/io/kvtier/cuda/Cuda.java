package io.kvtier.cuda;

import java.lang.reflect.Field;
import jcuda.NativePointerObject;
import jcuda.Pointer;
import jcuda.driver.CUdeviceptr;
import jcuda.driver.CUevent;
import jcuda.driver.CUresult;
import jcuda.driver.CUstream;

/**
 * The one place raw handles cross into and out of JCuda: PyTorch hands out streams, events and
 * device addresses as integers ({@code torch.cuda.Stream.cuda_stream}, {@code tensor.data_ptr()}),
 * and JCuda has no public way to wrap one, so its handle field is read and written here.
 */
final class Cuda {
  private static final Field NATIVE_POINTER;

  static {
    try {
      NATIVE_POINTER = NativePointerObject.class.getDeclaredField("nativePointer");
      NATIVE_POINTER.setAccessible(true);
    } catch (ReflectiveOperationException | RuntimeException e) {
      throw new ExceptionInInitializerError(
          "this JCuda version keeps its handles differently: " + e);
    }
  }

  private Cuda() {}

  /**
   * Throws unless {@code rc} is {@code CUDA_SUCCESS}.
   *
   * @throws CudaException naming {@code call} and the error
   */
  static void check(int rc, String call) {
    if (rc != CUresult.CUDA_SUCCESS) {
      throw new CudaException(call, rc);
    }
  }

  /** A stream handle from its raw value (0 is the legacy default stream). */
  static CUstream stream(long raw) {
    CUstream s = new CUstream();
    set(s, raw);
    return s;
  }

  /** An event handle from its raw value. */
  static CUevent event(long raw) {
    CUevent e = new CUevent();
    set(e, raw);
    return e;
  }

  /** A device pointer to {@code address}. */
  static CUdeviceptr device(long address) {
    return new CUdeviceptr().withByteOffset(address);
  }

  /** A host pointer to {@code address}. */
  static Pointer host(long address) {
    return new Pointer().withByteOffset(address);
  }

  /**
   * The raw value of a handle the driver filled in (a host or device address, a stream); not of a
   * pointer made by {@link #device} or {@link #host}, which carry their address as an offset.
   */
  static long raw(NativePointerObject handle) {
    try {
      return NATIVE_POINTER.getLong(handle);
    } catch (IllegalAccessException e) {
      throw new IllegalStateException(e);
    }
  }

  private static void set(NativePointerObject handle, long raw) {
    try {
      NATIVE_POINTER.setLong(handle, raw);
    } catch (IllegalAccessException e) {
      throw new IllegalStateException(e);
    }
  }
}
