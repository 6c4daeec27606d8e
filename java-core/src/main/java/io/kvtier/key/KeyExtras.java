package io.kvtier.key;

import java.util.Arrays;

/**
 * What besides its token ids makes a prompt's KV different (docs/keys.md): a root digest that
 * starts the hash chain (the connector's cache epoch; zero before any reset) and one 16-byte digest
 * per chunk of everything vLLM folds into that chunk's block hashes (LoRA adapter name and path,
 * multimodal items with their offset in the chunk, the cache salt on the first chunk, the hash of
 * prompt embeddings). A zero digest means nothing extra; chunks past the given ones have none.
 * Immutable.
 */
public final class KeyExtras {
  /** A plain text prompt before any reset: every digest zero. */
  public static final KeyExtras NONE = new KeyExtras(new long[] {0, 0});

  private final long[] words;

  private KeyExtras(long[] words) {
    this.words = words;
  }

  /**
   * Returns the extras in {@code words}: {@code [root_h1, root_h2, chunk0_h1, chunk0_h2, ...]},
   * each digest as two little-endian 64-bit halves ({@link #NONE} when {@code words} is null).
   *
   * @throws IllegalArgumentException if {@code words} has an odd length or no root
   */
  public static KeyExtras of(long[] words) {
    if (words == null) {
      return NONE;
    }
    if (words.length < 2 || words.length % 2 != 0) {
      throw new IllegalArgumentException(
          "key extras must be a root digest and whole chunk digests (an even number of at least 2"
              + " longs), got "
              + words.length);
    }
    return new KeyExtras(words.clone());
  }

  /** The first half of the digest the chain starts from (the parent of chunk 0). */
  public long rootH1() {
    return words[0];
  }

  /** The second half of the digest the chain starts from. */
  public long rootH2() {
    return words[1];
  }

  /** The first half of chunk {@code chunk}'s extra digest (0 past the given chunks). */
  public long chunkH1(int chunk) {
    int i = 2 + 2 * chunk;
    return i < words.length ? words[i] : 0;
  }

  /** The second half of chunk {@code chunk}'s extra digest (0 past the given chunks). */
  public long chunkH2(int chunk) {
    int i = 3 + 2 * chunk;
    return i < words.length ? words[i] : 0;
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof KeyExtras k && Arrays.equals(trimmed(), k.trimmed());
  }

  @Override
  public int hashCode() {
    return Arrays.hashCode(trimmed());
  }

  /** The words without trailing zero chunk digests, which mean the same as absent ones. */
  private long[] trimmed() {
    int n = words.length;
    while (n > 2 && words[n - 1] == 0 && words[n - 2] == 0) {
      n -= 2;
    }
    return Arrays.copyOf(words, n);
  }

  @Override
  public String toString() {
    return "KeyExtras[root="
        + ChunkKey.hex(words[0], words[1])
        + ", chunks="
        + (words.length / 2 - 1)
        + "]";
  }
}
