package io.kvtier.cuda;

import static io.kvtier.cuda.Cuda.check;

import jcuda.driver.CUcontext;
import jcuda.driver.CUdevice;
import jcuda.driver.CUdevice_attribute;
import jcuda.driver.JCudaDriver;

/**
 * A device's primary context, the one PyTorch uses, retained for as long as this object is open.
 * Threads that call the driver make it current with {@link #makeCurrent}.
 *
 * <p>Thread-safe.
 */
public final class CudaContext implements AutoCloseable {
  private final int ordinal;
  private final CUdevice device = new CUdevice();
  private final CUcontext context = new CUcontext();
  private boolean closed;

  private CudaContext(int ordinal) {
    this.ordinal = ordinal;
    check(JCudaDriver.cuDeviceGet(device, ordinal), "cuDeviceGet(" + ordinal + ")");
    check(JCudaDriver.cuDevicePrimaryCtxRetain(context, device), "cuDevicePrimaryCtxRetain");
  }

  /**
   * Retains device {@code ordinal}'s primary context.
   *
   * @throws IllegalStateException if CUDA cannot be used here (the message says why)
   * @throws IllegalArgumentException if there is no such device
   */
  public static CudaContext primary(int ordinal) {
    CudaProbe.Availability a = CudaProbe.availability();
    if (!a.available()) {
      throw new IllegalStateException("CUDA is not usable: " + a.reason());
    }
    if (ordinal < 0 || ordinal >= a.deviceCount()) {
      throw new IllegalArgumentException(
          "CUDA device " + ordinal + " does not exist (" + a.deviceCount() + " devices)");
    }
    CudaContext c = new CudaContext(ordinal);
    c.makeCurrent();
    if (c.attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING) == 0
        || c.attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY) == 0) {
      c.close();
      throw new IllegalStateException(
          "CUDA device " + ordinal + " lacks unified addressing or mapped host memory");
    }
    return c;
  }

  /** Makes this context current on the calling thread. */
  public void makeCurrent() {
    check(JCudaDriver.cuCtxSetCurrent(context), "cuCtxSetCurrent");
  }

  public int ordinal() {
    return ordinal;
  }

  /** A {@code CU_DEVICE_ATTRIBUTE_*} of the device. */
  public int attribute(int attribute) {
    int[] value = new int[1];
    check(JCudaDriver.cuDeviceGetAttribute(value, attribute, device), "cuDeviceGetAttribute");
    return value[0];
  }

  /** Releases the primary context (PyTorch keeps its own reference). Idempotent. */
  @Override
  public synchronized void close() {
    if (!closed) {
      closed = true;
      check(JCudaDriver.cuDevicePrimaryCtxRelease(device), "cuDevicePrimaryCtxRelease");
    }
  }
}
