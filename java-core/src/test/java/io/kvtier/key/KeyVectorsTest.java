package io.kvtier.key;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.constructor.SafeConstructor;

/** Checks the hash implementation against docs/key-vectors.json (JSON is read as YAML). */
class KeyVectorsTest {
  private static final Path VECTORS = Path.of("..", "docs", "key-vectors.json");

  @SuppressWarnings("unchecked")
  private static Map<String, Object> vectors() throws IOException {
    return (Map<String, Object>)
        new Yaml(new SafeConstructor(new LoaderOptions())).load(Files.readString(VECTORS));
  }

  static int[] tokensOf(Map<String, Object> v) {
    if (v.containsKey("tokens")) {
      return ((List<?>) v.get("tokens")).stream().mapToInt(o -> ((Number) o).intValue()).toArray();
    }
    if (v.containsKey("tokens_range")) {
      List<?> r = (List<?>) v.get("tokens_range");
      int start = ((Number) r.get(0)).intValue();
      int stop = ((Number) r.get(1)).intValue();
      return java.util.stream.IntStream.range(start, stop).toArray();
    }
    @SuppressWarnings("unchecked")
    Map<String, Object> a = (Map<String, Object>) v.get("tokens_affine");
    int count = ((Number) a.get("count")).intValue();
    long mul = ((Number) a.get("mul")).longValue();
    long mod = ((Number) a.get("mod")).longValue();
    int[] t = new int[count];
    for (int i = 0; i < count; i++) {
      t[i] = (int) (i * mul % mod);
    }
    return t;
  }

  /** The vector's root and chunk extra digests (hex, digest order) as {@link KeyExtras}. */
  @SuppressWarnings("unchecked")
  static KeyExtras extrasOf(Map<String, Object> v) {
    if (!v.containsKey("root")) {
      return KeyExtras.NONE;
    }
    List<String> digests = new java.util.ArrayList<>();
    digests.add((String) v.get("root"));
    digests.addAll((List<String>) v.get("chunk_extras"));
    long[] words = new long[2 * digests.size()];
    java.nio.ByteBuffer b =
        java.nio.ByteBuffer.allocate(16).order(java.nio.ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < digests.size(); i++) {
      b.clear();
      b.put(HexFormat.of().parseHex(digests.get(i))).flip();
      words[2 * i] = b.getLong();
      words[2 * i + 1] = b.getLong();
    }
    return KeyExtras.of(words);
  }

  @Test
  void seed_matchesDocumentedSeed() throws IOException {
    assertEquals(((Number) vectors().get("seed")).intValue(), ChunkHasher.SEED);
  }

  @Test
  @SuppressWarnings("unchecked")
  void murmur3_matchesDocumentedDigests() throws IOException {
    for (Map<String, Object> v : (List<Map<String, Object>>) vectors().get("murmur3")) {
      byte[] input = HexFormat.of().parseHex((String) v.get("input_hex"));
      long[] h = Murmur3x64.hash(input, ChunkHasher.SEED);
      assertEquals(v.get("digest"), ChunkKey.hex(h[0], h[1]), "input " + v.get("input_hex"));
    }
  }

  @Test
  @SuppressWarnings("unchecked")
  void namespaceIds_matchDocumentedVectors() throws IOException {
    List<Map<String, Object>> ns = (List<Map<String, Object>>) vectors().get("namespaces");
    assertEquals(
        ns.get(0).get("canonical"),
        new KeyNamespace("meta-llama/Llama-3.1-8B", "bfloat16", 32, 8, 128, 1, 0, 256, false)
            .canonical());
    assertEquals(
        ns.get(1).get("canonical"),
        new KeyNamespace("tiny", "bfloat16", 2, 2, 64, 2, 1, 256, false, "head-major").canonical());
    assertEquals(
        ns.get(2).get("canonical"),
        new KeyNamespace(
                "meta-llama/Llama-3.1-8B",
                "bfloat16",
                16,
                8,
                128,
                1,
                0,
                256,
                false,
                "token-major",
                16)
            .canonical());
    assertEquals(
        ns.get(3).get("canonical"),
        new KeyNamespace(
                "tiny",
                "float32",
                4,
                2,
                64,
                1,
                0,
                256,
                false,
                "head-major",
                0,
                "sliding200:0,2+full:1,3")
            .canonical());
    for (Map<String, Object> v : ns) {
      byte[] text = ((String) v.get("canonical")).getBytes(java.nio.charset.StandardCharsets.UTF_8);
      assertEquals(((Number) v.get("id")).longValue(), Murmur3x64.hash(text, ChunkHasher.SEED)[0]);
    }
  }

  @Test
  @SuppressWarnings("unchecked")
  void blockPrefixes_matchDocumentedVectors() throws IOException {
    List<Map<String, Object>> all = (List<Map<String, Object>>) vectors().get("block_prefixes");
    assertTrue(all.size() >= 3);
    for (Map<String, Object> v : all) {
      int[] tokens = tokensOf(v);
      int chunk = ((Number) v.get("chunk_size")).intValue();
      int block = ((Number) v.get("block_size")).intValue();
      int keyed = ((Number) v.get("keyed_tokens")).intValue();
      assertEquals(keyed, tokens.length - tokens.length % chunk % block);
      KeyExtras extras = extrasOf(v);
      long[] h = ChunkHasher.hashes(tokens, keyed, extras, chunk, true, Integer.MAX_VALUE);
      List<List<String>> prefixes = (List<List<String>>) v.get("prefixes");
      assertEquals(prefixes.size(), h.length / 2);
      for (int c = 0; c < prefixes.size(); c++) {
        long[] parent = c == 0 ? null : new long[] {h[2 * c - 2], h[2 * c - 1]};
        int count = Math.min(chunk, keyed - c * chunk);
        long[] p = ChunkHasher.blockPrefixes(parent, extras, c, tokens, c * chunk, count, block);
        List<String> got = new java.util.ArrayList<>();
        for (int k = 0; k < p.length; k += 2) {
          got.add(ChunkKey.hex(p[k], p[k + 1]));
        }
        assertEquals(prefixes.get(c), got, "chunk " + c);
        assertEquals(ChunkKey.hex(h[2 * c], h[2 * c + 1]), got.getLast(), "the chunk's own hash");
      }
    }
  }

  @Test
  @SuppressWarnings("unchecked")
  void chunkHashes_matchDocumentedVectors() throws IOException {
    for (Map<String, Object> v : (List<Map<String, Object>>) vectors().get("chunks")) {
      int[] tokens = tokensOf(v);
      int chunk = ((Number) v.get("chunk_size")).intValue();
      boolean partial = (Boolean) v.get("save_unfull_chunk");
      long[] h =
          ChunkHasher.hashes(tokens, tokens.length, extrasOf(v), chunk, partial, Integer.MAX_VALUE);
      List<String> expected = (List<String>) v.get("hashes");
      assertEquals(expected.size(), h.length / 2, "chunk count for " + v);
      for (int i = 0; i < expected.size(); i++) {
        assertEquals(expected.get(i), ChunkKey.hex(h[2 * i], h[2 * i + 1]), "chunk " + i);
      }
    }
  }
}
