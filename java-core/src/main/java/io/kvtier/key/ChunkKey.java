package io.kvtier.key;

import java.util.HexFormat;

/**
 * The identity of a stored chunk: a {@link KeyNamespace} id and the chunk's 128-bit prefix-chained
 * hash ({@code h1}, {@code h2}). Two chunks with equal keys hold interchangeable bytes. Immutable.
 */
public record ChunkKey(long namespace, long h1, long h2) {
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
  public String toString() {
    return String.format("%016x/%s", namespace, hashHex());
  }
}
