package io.kvtier.bench;

/** KV layouts the benchmarks use: bytes one token occupies in a chunk (all layers, K and V). */
public enum Geometry {
  /** Llama-3.1-8B: 32 layers x (K, V) x 8 KV heads x 128 x bf16 = 128 KiB/token, 32 MiB/chunk. */
  LLAMA_8B(32L * 2 * 8 * 128 * 2),
  /** The small test model: 4 layers x (K, V) x 2 KV heads x 64 x bf16 = 2 KiB/token. */
  SMALL(4L * 2 * 2 * 64 * 2);

  final long bytesPerToken;

  Geometry(long bytesPerToken) {
    this.bytesPerToken = bytesPerToken;
  }

  long chunkBytes(int chunkTokens) {
    return bytesPerToken * chunkTokens;
  }
}
