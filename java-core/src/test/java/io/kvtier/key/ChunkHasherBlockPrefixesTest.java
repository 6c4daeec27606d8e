package io.kvtier.key;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class ChunkHasherBlockPrefixesTest {
  @ParameterizedTest
  @CsvSource({"256,16", "256,32", "250,16", "48,6", "7,4", "3,4", "64,1"})
  void eachBlockPrefixHashesLikeAPartialChunkOfThatLength(int count, int block) {
    int[] tokens = new Random(count * 31L + block).ints(300, -5, 150_000).toArray();
    long[] parent = {0x1234_5678_9abc_def0L, -42L};
    KeyExtras extras = KeyExtras.of(new long[] {0, 0, 77, 88, 99, 11});
    long[] p = ChunkHasher.blockPrefixes(parent, extras, 1, tokens, 20, count, block);
    assertEquals(2 * (count / block), p.length);
    for (int k = 1; k <= count / block; k++) {
      long[] one = new long[2];
      ChunkHasher.hashChunk(parent, extras, 1, tokens, 20, k * block, one);
      assertArrayEquals(one, new long[] {p[2 * k - 2], p[2 * k - 1]}, "prefix of " + k + " blocks");
    }
  }
}
