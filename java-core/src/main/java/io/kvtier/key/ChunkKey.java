package io.kvtier.key;

import java.util.HexFormat;

/**
 * The identity of a stored chunk: a {@link KeyNamespace} id and the chunk's 128-bit prefix-chained
 * hash ({@code h1}, {@code h2}). Two chunks with equal keys hold interchangeable bytes. Immutable.
 *
 * <p>{@code root} is a placement hint, not part of the identity: the first half ({@code h1}) of the
 * hash of the prompt's first chunk, or 0 where it is not known (a key read back from a disk header
 * or the wire). Every chunk of a prompt, and of every prompt that starts the same way, has the same
 * root, so a Redis cluster can keep them on one node (hash tags). Since a chunk's hash already
 * chains its prompt's first chunk, equal hashes imply equal roots; {@link #equals} and {@link
 * #hashCode} leave the root out so a key with and without its hint are the same key.
 */
public record ChunkKey(long namespace, long h1, long h2, long root) {
  /** A key without a placement hint. */
  public ChunkKey(long namespace, long h1, long h2) {
    this(namespace, h1, h2, 0);
  }

  /** The hash as 32 hex digits: h1 then h2, each little-endian (the MurmurHash3 digest order). */
  public String hashHex() {
    return hex(h1, h2);
  }

  /** A 128-bit hash as 32 hex digits in digest order: h1 then h2, each little-endian. */
  public static String hex(long h1, long h2) {
    HexFormat f = HexFormat.of();
    return f.toHexDigits(Long.reverseBytes(h1)) + f.toHexDigits(Long.reverseBytes(h2));
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof ChunkKey k && namespace == k.namespace && h1 == k.h1 && h2 == k.h2;
  }

  @Override
  public int hashCode() {
    return Long.hashCode(h1 ^ 31 * h2 ^ 961 * namespace);
  }

  @Override
  public String toString() {
    return String.format("%016x/%s", namespace, hashHex());
  }
}
