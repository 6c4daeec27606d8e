package io.kvtier.key;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;

/**
 * MurmurHash3, x64 128-bit variant (Austin Appleby's reference {@code MurmurHash3_x64_128}), over
 * byte arrays and over kvtier's chunk input (a 16-byte parent hash and a 16-byte extra digest
 * followed by int32 token ids, all little-endian) without materialising the bytes.
 *
 * <p>The digest is {@code h1} then {@code h2}, each little-endian, exactly as the reference and
 * Python's {@code mmh3.hash_bytes(data, seed, x64arch=True)} produce. Stateless and thread-safe.
 */
public final class Murmur3x64 {
  private static final long C1 = 0x87c37b91114253d5L;
  private static final long C2 = 0x4cf5ad432745937fL;
  private static final long MASK32 = 0xffffffffL;
  private static final VarHandle LONG_LE =
      MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);

  private Murmur3x64() {}

  /** Hashes {@code data} with a 32-bit {@code seed}; returns {@code {h1, h2}}. */
  public static long[] hash(byte[] data, int seed) {
    long h1 = seed & MASK32;
    long h2 = seed & MASK32;
    int blocks = data.length / 16;
    for (int i = 0; i < blocks; i++) {
      long k1 = (long) LONG_LE.get(data, i * 16);
      long k2 = (long) LONG_LE.get(data, i * 16 + 8);
      h1 = round1(h1, h2, k1);
      h2 = round2(h2, h1, k2);
    }
    int tail = blocks * 16;
    long k1 = 0;
    long k2 = 0;
    for (int i = data.length - 1; i >= tail; i--) {
      int shift = ((i - tail) & 7) * 8;
      if (i - tail >= 8) {
        k2 |= (data[i] & 0xffL) << shift;
      } else {
        k1 |= (data[i] & 0xffL) << shift;
      }
    }
    int rem = data.length - tail;
    if (rem > 8) {
      h2 ^= mixK2(k2);
    }
    if (rem > 0) {
      h1 ^= mixK1(k1);
    }
    return finish(h1, h2, data.length);
  }

  /**
   * Hashes the byte string {@code le64(parentH1) ‖ le64(parentH2) ‖ le64(extraH1) ‖ le64(extraH2) ‖
   * le32(tokens[from]) ‖ ... ‖ le32(tokens[from + count - 1])} and writes {@code h1, h2} to {@code
   * out[outIndex], out[outIndex + 1]}. Equal to {@link #hash(byte[], int)} of those bytes;
   * allocates nothing.
   */
  static void hashChunk(
      long parentH1,
      long parentH2,
      long extraH1,
      long extraH2,
      int[] tokens,
      int from,
      int count,
      int seed,
      long[] out,
      int outIndex) {
    run(parentH1, parentH2, extraH1, extraH2, tokens, from, count, 0, seed, out, outIndex);
  }

  /**
   * Hashes, like {@link #hashChunk}, every prefix of {@code tokens[from, from + count)} that ends
   * on a multiple of {@code step} tokens: {@code out[2(k-1)], out[2(k-1)+1]} become the {@code h1,
   * h2} of the first {@code k * step} tokens, for {@code k = 1 .. count / step}. One pass over the
   * tokens when {@code step} is a multiple of 4 (a prefix then ends on a 16-byte block, so its
   * digest is the running state finalised); allocates nothing.
   *
   * @throws IllegalArgumentException if {@code step < 1} or {@code out} is too short
   */
  static void hashChunkPrefixes(
      long parentH1,
      long parentH2,
      long extraH1,
      long extraH2,
      int[] tokens,
      int from,
      int count,
      int step,
      int seed,
      long[] out) {
    if (step < 1 || out.length < 2 * (count / step)) {
      throw new IllegalArgumentException(
          "step " + step + " or output of " + out.length + " longs does not fit " + count);
    }
    if (step % 4 != 0) {
      for (int k = 1; k * step <= count; k++) {
        hashChunk(
            parentH1, parentH2, extraH1, extraH2, tokens, from, k * step, seed, out, 2 * (k - 1));
      }
      return;
    }
    run(
        parentH1,
        parentH2,
        extraH1,
        extraH2,
        tokens,
        from,
        count / step * step,
        step,
        seed,
        out,
        0);
  }

  /**
   * The chunk hash's one pass: with {@code step == 0} the digest of all {@code count} tokens goes
   * to {@code out[outIndex]}; with {@code step} a multiple of 4 (and {@code count} a multiple of
   * it) the digest of every prefix of {@code k * step} tokens goes to {@code out[outIndex +
   * 2(k-1)]}.
   */
  private static void run(
      long parentH1,
      long parentH2,
      long extraH1,
      long extraH2,
      int[] tokens,
      int from,
      int count,
      int step,
      int seed,
      long[] out,
      int outIndex) {
    long h1 = seed & MASK32;
    long h2 = seed & MASK32;
    // The parent hash and the chunk's extra digest are exactly one 16-byte block each.
    h1 = round1(h1, h2, parentH1);
    h2 = round2(h2, h1, parentH2);
    h1 = round1(h1, h2, extraH1);
    h2 = round2(h2, h1, extraH2);
    int i = from;
    int end = from + count;
    int prefixes = 0;
    for (; i + 4 <= end; i += 4) {
      long k1 = (tokens[i] & MASK32) | ((long) tokens[i + 1] << 32);
      long k2 = (tokens[i + 2] & MASK32) | ((long) tokens[i + 3] << 32);
      h1 = round1(h1, h2, k1);
      h2 = round2(h2, h1, k2);
      int done = i + 4 - from;
      if (step > 0 && done % step == 0) {
        finishInto(h1, h2, 32 + 4L * done, out, outIndex + 2 * prefixes++);
      }
    }
    if (step > 0) {
      return;
    }
    int rem = end - i; // 0..3 tokens = 0, 4, 8 or 12 tail bytes
    if (rem == 3) {
      h2 ^= mixK2(tokens[i + 2] & MASK32);
    }
    if (rem >= 2) {
      h1 ^= mixK1((tokens[i] & MASK32) | ((long) tokens[i + 1] << 32));
    } else if (rem == 1) {
      h1 ^= mixK1(tokens[i] & MASK32);
    }
    finishInto(h1, h2, 32 + 4L * count, out, outIndex);
  }

  /** One 16-byte block's update of {@code h1}, from the block's first half {@code k1}. */
  private static long round1(long h1, long h2, long k1) {
    h1 ^= mixK1(k1);
    h1 = Long.rotateLeft(h1, 27) + h2;
    return h1 * 5 + 0x52dce729;
  }

  /** The same block's update of {@code h2} (after {@link #round1}), from its second half. */
  private static long round2(long h2, long h1, long k2) {
    h2 ^= mixK2(k2);
    h2 = Long.rotateLeft(h2, 31) + h1;
    return h2 * 5 + 0x38495ab5;
  }

  private static long mixK1(long k1) {
    k1 *= C1;
    k1 = Long.rotateLeft(k1, 31);
    return k1 * C2;
  }

  private static long mixK2(long k2) {
    k2 *= C2;
    k2 = Long.rotateLeft(k2, 33);
    return k2 * C1;
  }

  private static long[] finish(long h1, long h2, long length) {
    long[] out = new long[2];
    finishInto(h1, h2, length, out, 0);
    return out;
  }

  private static void finishInto(long h1, long h2, long length, long[] out, int outIndex) {
    h1 ^= length;
    h2 ^= length;
    h1 += h2;
    h2 += h1;
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 += h2;
    h2 += h1;
    out[outIndex] = h1;
    out[outIndex + 1] = h2;
  }

  private static long fmix64(long k) {
    k ^= k >>> 33;
    k *= 0xff51afd7ed558ccdL;
    k ^= k >>> 33;
    k *= 0xc4ceb9fe1a85ec53L;
    k ^= k >>> 33;
    return k;
  }
}
