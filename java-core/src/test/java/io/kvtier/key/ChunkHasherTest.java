package io.kvtier.key;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

class ChunkHasherTest {
  private static int[] randomTokens(int n, long seed) {
    return new Random(seed).ints(n, 0, 152_000).toArray();
  }

  @Test
  void hashChunk_equalsByteArrayHashOfSpecBytes_forEveryTailLength() {
    Random r = new Random(3);
    for (int count = 0; count < 40; count++) {
      int[] tokens = randomTokens(count + 5, count);
      long p1 = r.nextLong();
      long p2 = r.nextLong();
      long x1 = r.nextLong();
      long x2 = r.nextLong();
      ByteBuffer bytes = ByteBuffer.allocate(32 + 4 * count).order(ByteOrder.LITTLE_ENDIAN);
      bytes.putLong(p1).putLong(p2).putLong(x1).putLong(x2);
      for (int i = 0; i < count; i++) {
        bytes.putInt(tokens[5 + i]);
      }
      long[] out = new long[2];
      Murmur3x64.hashChunk(p1, p2, x1, x2, tokens, 5, count, ChunkHasher.SEED, out, 0);
      assertArrayEquals(Murmur3x64.hash(bytes.array(), ChunkHasher.SEED), out, "count " + count);
    }
  }

  @Test
  void hashes_sharedPrefix_sharesLeadingHashesOnly() {
    int[] a = randomTokens(1024, 1);
    int[] b = a.clone();
    b[600] ^= 1; // differs in chunk 2
    long[] ha = ChunkHasher.hashes(a, a.length, 256, false, Integer.MAX_VALUE);
    long[] hb = ChunkHasher.hashes(b, b.length, 256, false, Integer.MAX_VALUE);
    assertArrayEquals(Arrays.copyOf(ha, 4), Arrays.copyOf(hb, 4));
    assertNotEquals(ha[4], hb[4]);
    assertNotEquals(ha[6], hb[6], "a change propagates to every later chunk");
  }

  @Test
  void hashes_extras_changeTheirChunkAndEveryLaterOne_only() {
    int[] t = randomTokens(1024, 4);
    long[] plain = ChunkHasher.hashes(t, t.length, 256, false, Integer.MAX_VALUE);
    KeyExtras chunk1 = KeyExtras.of(new long[] {0, 0, 0, 0, 7, 9});
    long[] extra = ChunkHasher.hashes(t, t.length, chunk1, 256, false, Integer.MAX_VALUE);
    assertArrayEquals(Arrays.copyOf(plain, 2), Arrays.copyOf(extra, 2), "chunk 0 has no extra");
    for (int c = 1; c < 4; c++) {
      assertNotEquals(plain[2 * c], extra[2 * c], "chunk " + c);
    }
    KeyExtras root = KeyExtras.of(new long[] {1, 0});
    long[] epoch = ChunkHasher.hashes(t, t.length, root, 256, false, Integer.MAX_VALUE);
    for (int c = 0; c < 4; c++) {
      assertNotEquals(plain[2 * c], epoch[2 * c], "a root changes every chunk; chunk " + c);
    }
    assertArrayEquals(
        plain,
        ChunkHasher.hashes(t, t.length, KeyExtras.of(new long[] {0, 0, 0, 0}), 256, false, 9),
        "zero digests are the plain prompt");
  }

  @Test
  void keyExtras_refusesMalformedWords() {
    assertThrows(IllegalArgumentException.class, () -> KeyExtras.of(new long[] {1}));
    assertThrows(IllegalArgumentException.class, () -> KeyExtras.of(new long[] {1, 2, 3}));
    assertEquals(KeyExtras.NONE, KeyExtras.of(null));
    assertEquals(KeyExtras.of(new long[] {5, 6}), KeyExtras.of(new long[] {5, 6, 0, 0}));
  }

  @Test
  void hashChunk_continuesTheChainOfHashes() {
    int[] t = randomTokens(700, 5);
    KeyExtras x = KeyExtras.of(new long[] {3, 4, 5, 6, 0, 0, 7, 8});
    long[] all = ChunkHasher.hashes(t, t.length, x, 256, true, Integer.MAX_VALUE);
    long[] h = new long[2];
    for (int c = 0; c < 3; c++) {
      ChunkHasher.hashChunk(
          c == 0 ? null : h, x, c, t, 256 * c, Math.min(256, t.length - 256 * c), h);
      assertArrayEquals(Arrays.copyOfRange(all, 2 * c, 2 * c + 2), h, "chunk " + c);
    }
  }

  @Test
  void hashes_partialChunk_differsFromAnyFullChunk() {
    int[] t = randomTokens(512, 2);
    long[] full = ChunkHasher.hashes(t, 512, 256, true, Integer.MAX_VALUE);
    long[] partial = ChunkHasher.hashes(t, 300, 256, true, Integer.MAX_VALUE);
    assertEquals(4, full.length);
    assertEquals(4, partial.length);
    assertEquals(full[0], partial[0]);
    assertNotEquals(full[2], partial[2]);
  }

  @Test
  void hashes_withoutUnfull_dropsRemainder_andMaxChunksCaps() {
    int[] t = randomTokens(700, 4);
    assertEquals(4, ChunkHasher.hashes(t, 700, 256, false, 99).length);
    assertEquals(2, ChunkHasher.hashes(t, 700, 256, true, 1).length);
    assertEquals(0, ChunkHasher.hashes(t, 255, 256, false, 99).length);
  }

  @Test
  void hashes_tokenCountBeyondArray_throws() {
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class, () -> ChunkHasher.hashes(new int[10], 11, 4, false, 9));
    assertEquals("tokenCount 11 exceeds the token array's length 10", e.getMessage());
  }

  @Test
  void namespace_differsByEveryField_andIsStable() {
    KeyNamespace base = new KeyNamespace("m", "bfloat16", 32, 8, 128, 2, 1, 256, false);
    assertEquals(base.id(), new KeyNamespace("m", "bfloat16", 32, 8, 128, 2, 1, 256, false).id());
    KeyNamespace[] others = {
      new KeyNamespace("m2", "bfloat16", 32, 8, 128, 2, 1, 256, false),
      new KeyNamespace("m", "float16", 32, 8, 128, 2, 1, 256, false),
      new KeyNamespace("m", "bfloat16", 31, 8, 128, 2, 1, 256, false),
      new KeyNamespace("m", "bfloat16", 32, 4, 128, 2, 1, 256, false),
      new KeyNamespace("m", "bfloat16", 32, 8, 64, 2, 1, 256, false),
      new KeyNamespace("m", "bfloat16", 32, 8, 128, 4, 1, 256, false),
      new KeyNamespace("m", "bfloat16", 32, 8, 128, 2, 0, 256, false),
      new KeyNamespace("m", "bfloat16", 32, 8, 128, 2, 1, 128, false),
      new KeyNamespace("m", "bfloat16", 32, 8, 128, 2, 1, 256, false, "head-major"),
    };
    for (KeyNamespace o : others) {
      assertNotEquals(base.id(), o.id(), o.canonical());
    }
  }

  @Test
  void namespace_mla_isSharedAcrossRanks() {
    assertEquals(
        new KeyNamespace("m", "bfloat16", 61, 1, 576, 8, 0, 256, true).id(),
        new KeyNamespace("m", "bfloat16", 61, 1, 576, 8, 7, 256, true).id());
  }

  @Test
  void namespace_rankOutOfRange_throws() {
    assertThrows(
        IllegalArgumentException.class,
        () -> new KeyNamespace("m", "bfloat16", 1, 1, 1, 2, 2, 256, false));
  }
}
