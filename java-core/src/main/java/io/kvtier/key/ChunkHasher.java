package io.kvtier.key;

import static io.kvtier.Checks.checkNonNegative;
import static io.kvtier.Checks.checkPositive;

/**
 * Cuts a prompt into chunks and computes their prefix-chained hashes (docs/keys.md):
 *
 * <pre>
 *   hash_{-1} = root                  (KeyExtras; 16 zero bytes for a plain prompt)
 *   hash_i    = MurmurHash3_x64_128(seed = SEED, hash_{i-1} ‖ extra_i ‖ le32(token ids of chunk i))
 * </pre>
 *
 * where {@code extra_i} is chunk {@code i}'s 16-byte extra digest ({@link KeyExtras}; zero when
 * nothing but its tokens makes its KV).
 *
 * <p>A chunk's hash therefore names its whole prefix; a partial last chunk hashes fewer bytes, so
 * its length is part of its hash. Independent of process, machine, JVM and restart.
 *
 * <p>Stateless and thread-safe.
 */
public final class ChunkHasher {
  /** The fixed MurmurHash3 seed: ASCII {@code "kvti"} read as a big-endian int. */
  public static final int SEED = 0x6b767469;

  private ChunkHasher() {}

  /**
   * Returns how many chunks {@code tokenCount} tokens make: full chunks, plus one partial chunk
   * when {@code includePartial} and a remainder exists.
   */
  public static int chunkCount(int tokenCount, int chunkTokens, boolean includePartial) {
    checkNonNegative(tokenCount, "tokenCount");
    checkPositive(chunkTokens, "chunkTokens");
    int full = tokenCount / chunkTokens;
    return full + (includePartial && tokenCount % chunkTokens != 0 ? 1 : 0);
  }

  /**
   * Returns {@code tokenCount} if the first {@code tokenCount} entries of {@code tokens} exist.
   *
   * @throws IllegalArgumentException if {@code tokenCount} is negative or exceeds the array
   */
  public static int checkTokenCount(int[] tokens, int tokenCount) {
    checkNonNegative(tokenCount, "tokenCount");
    if (tokenCount > tokens.length) {
      throw new IllegalArgumentException(
          "tokenCount " + tokenCount + " exceeds the token array's length " + tokens.length);
    }
    return tokenCount;
  }

  /**
   * Returns the chained hashes of the first {@code maxChunks} chunks of {@code tokens[0,
   * tokenCount)} as {@code {h1_0, h2_0, h1_1, h2_1, ...}}.
   *
   * @throws IllegalArgumentException if {@code tokenCount} exceeds the array or an argument is
   *     negative or zero where it must be positive
   */
  public static long[] hashes(
      int[] tokens, int tokenCount, int chunkTokens, boolean includePartial, int maxChunks) {
    return hashes(tokens, tokenCount, KeyExtras.NONE, chunkTokens, includePartial, maxChunks);
  }

  /** Like {@link #hashes(int[], int, int, boolean, int)} with {@code extras} in the chain. */
  public static long[] hashes(
      int[] tokens,
      int tokenCount,
      KeyExtras extras,
      int chunkTokens,
      boolean includePartial,
      int maxChunks) {
    checkTokenCount(tokens, tokenCount);
    checkNonNegative(maxChunks, "maxChunks");
    extras = extras == null ? KeyExtras.NONE : extras;
    int chunks = Math.min(maxChunks, chunkCount(tokenCount, chunkTokens, includePartial));
    long[] out = new long[2 * chunks];
    long h1 = extras.rootH1();
    long h2 = extras.rootH2();
    for (int c = 0; c < chunks; c++) {
      int from = c * chunkTokens;
      int count = Math.min(chunkTokens, tokenCount - from);
      Murmur3x64.hashChunk(
          h1, h2, extras.chunkH1(c), extras.chunkH2(c), tokens, from, count, SEED, out, 2 * c);
      h1 = out[2 * c];
      h2 = out[2 * c + 1];
    }
    return out;
  }

  /**
   * Hashes chunk {@code chunk} of a prompt, {@code tokens[from, from + count)}, under its parent's
   * hash ({@code null} for the first chunk: the chain starts at the extras' root), writing {@code
   * h1, h2} to {@code out[0], out[1]}. For callers that stop at the first miss instead of hashing
   * the whole prompt; {@code parent} may be {@code out}.
   */
  public static void hashChunk(
      long[] parent, KeyExtras extras, int chunk, int[] tokens, int from, int count, long[] out) {
    extras = extras == null ? KeyExtras.NONE : extras;
    long p1 = parent == null ? extras.rootH1() : parent[0];
    long p2 = parent == null ? extras.rootH2() : parent[1];
    Murmur3x64.hashChunk(
        p1, p2, extras.chunkH1(chunk), extras.chunkH2(chunk), tokens, from, count, SEED, out, 0);
  }

  /**
   * Returns the hashes of chunk {@code chunk}'s block-aligned prefixes (docs/keys.md, "Block
   * prefixes"): for {@code k = 1 .. count / blockTokens}, {@code out[2(k-1)], out[2(k-1)+1]} are
   * the {@code h1, h2} that a chunk of the prompt's first {@code k * blockTokens} tokens from
   * {@code from} would have, which is the hash of a partial chunk of that length. The last one is
   * the chunk's own hash when {@code count} is a multiple of {@code blockTokens}. {@code parent} is
   * the previous chunk's hash ({@code null} for the first chunk).
   *
   * @throws IllegalArgumentException if {@code blockTokens < 1}
   */
  public static long[] blockPrefixes(
      long[] parent,
      KeyExtras extras,
      int chunk,
      int[] tokens,
      int from,
      int count,
      int blockTokens) {
    checkPositive(blockTokens, "blockTokens");
    extras = extras == null ? KeyExtras.NONE : extras;
    long p1 = parent == null ? extras.rootH1() : parent[0];
    long p2 = parent == null ? extras.rootH2() : parent[1];
    long[] out = new long[2 * (count / blockTokens)];
    Murmur3x64.hashChunkPrefixes(
        p1,
        p2,
        extras.chunkH1(chunk),
        extras.chunkH2(chunk),
        tokens,
        from,
        count,
        blockTokens,
        SEED,
        out);
    return out;
  }

  /**
   * Returns the keys of the chunks of a prompt in {@code namespace}, each with the prompt's root
   * ({@link ChunkKey#root}); see {@link #hashes}.
   */
  public static ChunkKey[] keys(
      long namespace,
      int[] tokens,
      int tokenCount,
      int chunkTokens,
      boolean includePartial,
      int maxChunks) {
    return keys(
        namespace, tokens, tokenCount, KeyExtras.NONE, chunkTokens, includePartial, maxChunks);
  }

  /** Like {@link #keys(long, int[], int, int, boolean, int)} with {@code extras} in the chain. */
  public static ChunkKey[] keys(
      long namespace,
      int[] tokens,
      int tokenCount,
      KeyExtras extras,
      int chunkTokens,
      boolean includePartial,
      int maxChunks) {
    long[] h = hashes(tokens, tokenCount, extras, chunkTokens, includePartial, maxChunks);
    ChunkKey[] keys = new ChunkKey[h.length / 2];
    for (int i = 0; i < keys.length; i++) {
      keys[i] = new ChunkKey(namespace, h[2 * i], h[2 * i + 1], h[0]);
    }
    return keys;
  }
}
