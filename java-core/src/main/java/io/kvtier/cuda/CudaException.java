package io.kvtier.cuda;

import jcuda.driver.CUresult;

/** A CUDA driver call that failed: the call, and the driver's name for the error. */
public final class CudaException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final int code;

  CudaException(String call, int code) {
    super(call + " failed: " + CUresult.stringFor(code) + " (" + code + ")");
    this.code = code;
  }

  /** The driver's {@code CUresult}. */
  public int code() {
    return code;
  }
}
