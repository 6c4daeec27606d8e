/**
 * Chunk keys: {@link io.kvtier.key.ChunkHasher} (prefix-chained 128-bit MurmurHash3 hashes of token
 * chunks), {@link io.kvtier.key.KeyNamespace} (what makes bytes interchangeable) and {@link
 * io.kvtier.key.ChunkKey}. The spec and test vectors are in docs/keys.md.
 */
package io.kvtier.key;
