/**
 * Everything that touches CUDA: JCuda's driver API only (no runtime API, no NVRTC). JCuda types
 * never appear outside this package; callers see primitives and kvtier types.
 */
package io.kvtier.cuda;
