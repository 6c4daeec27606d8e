/**
 * Moving tokens between vLLM's paged KV cache layouts ({@link io.kvtier.transfer.PagedLayout}) and
 * kvtier's contiguous chunks: {@link io.kvtier.transfer.HostKvTransfer} for host memory (the CPU
 * backend, and the reference the GPU kernels are tested against).
 */
package io.kvtier.transfer;
