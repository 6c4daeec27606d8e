package io.kvtier.key;

import static io.kvtier.Checks.checkNonNegative;
import static io.kvtier.Checks.checkPositive;

import java.nio.charset.StandardCharsets;
import java.util.Objects;

/**
 * What makes stored bytes interchangeable: model, KV dtype, the layout of a chunk, tensor-parallel
 * size and rank, and chunk size. Chunks are only ever shared between engines with equal namespaces.
 * Immutable.
 *
 * @param modelId the model's name or path as vLLM reports it
 * @param kvDtype the KV cache dtype, e.g. {@code bfloat16}, {@code float16}, {@code fp8_e4m3}
 * @param numLayers attention layers whose KV is stored
 * @param kvHeadsPerRank KV heads held by this rank (for MLA: 1)
 * @param headSize elements per head
 * @param tpSize tensor-parallel world size
 * @param tpRank this process's rank; ignored (stored once for all ranks) when {@code mla}
 * @param chunkTokens tokens per chunk
 * @param mla whether the cache is MLA's single latent tensor (no separate K and V)
 * @param chunkOrder how a chunk orders its bytes, {@code token-major} or {@code head-major} (see
 *     {@code io.kvtier.transfer.PagedLayout#chunkOrder()}): engines whose caches differ in layout
 *     store different bytes for the same tokens and must not share chunks
 * @param firstLayer the model's index of the first layer stored (a pipeline-parallel stage holds
 *     layers {@code [firstLayer, firstLayer + numLayers)}; 0 without pipeline parallelism)
 * @param kvGroups the model's KV cache groups ({@code io.kvtier.engine.CacheGroups#describe()}):
 *     empty for one group of full-attention layers; else each group's kind and layers, since a
 *     sliding group's chunks keep only what its window needs
 */
public record KeyNamespace(
    String modelId,
    String kvDtype,
    int numLayers,
    int kvHeadsPerRank,
    int headSize,
    int tpSize,
    int tpRank,
    int chunkTokens,
    boolean mla,
    String chunkOrder,
    int firstLayer,
    String kvGroups) {

  /**
   * Validates every field.
   *
   * @throws IllegalArgumentException naming the field and value
   */
  public KeyNamespace {
    Objects.requireNonNull(modelId, "modelId");
    Objects.requireNonNull(kvDtype, "kvDtype");
    Objects.requireNonNull(kvGroups, "kvGroups");
    if (kvGroups.contains(";")) {
      throw new IllegalArgumentException("kvGroups must not contain ';', got " + kvGroups);
    }
    checkPositive(numLayers, "numLayers");
    checkPositive(kvHeadsPerRank, "kvHeadsPerRank");
    checkPositive(headSize, "headSize");
    checkPositive(tpSize, "tpSize");
    checkNonNegative(tpRank, "tpRank");
    checkPositive(chunkTokens, "chunkTokens");
    checkNonNegative(firstLayer, "firstLayer");
    if (tpRank >= tpSize) {
      throw new IllegalArgumentException("tpRank " + tpRank + " must be < tpSize " + tpSize);
    }
    if (!"token-major".equals(chunkOrder) && !"head-major".equals(chunkOrder)) {
      throw new IllegalArgumentException(
          "chunkOrder must be token-major or head-major, got " + chunkOrder);
    }
  }

  /** A namespace of one group of full-attention layers. */
  public KeyNamespace(
      String modelId,
      String kvDtype,
      int numLayers,
      int kvHeadsPerRank,
      int headSize,
      int tpSize,
      int tpRank,
      int chunkTokens,
      boolean mla,
      String chunkOrder,
      int firstLayer) {
    this(
        modelId,
        kvDtype,
        numLayers,
        kvHeadsPerRank,
        headSize,
        tpSize,
        tpRank,
        chunkTokens,
        mla,
        chunkOrder,
        firstLayer,
        "");
  }

  /** A namespace of the model's layers from the first one (no pipeline parallelism). */
  public KeyNamespace(
      String modelId,
      String kvDtype,
      int numLayers,
      int kvHeadsPerRank,
      int headSize,
      int tpSize,
      int tpRank,
      int chunkTokens,
      boolean mla,
      String chunkOrder) {
    this(
        modelId,
        kvDtype,
        numLayers,
        kvHeadsPerRank,
        headSize,
        tpSize,
        tpRank,
        chunkTokens,
        mla,
        chunkOrder,
        0);
  }

  /** A namespace with token-major chunks (NHD-style caches, MLA). */
  public KeyNamespace(
      String modelId,
      String kvDtype,
      int numLayers,
      int kvHeadsPerRank,
      int headSize,
      int tpSize,
      int tpRank,
      int chunkTokens,
      boolean mla) {
    this(
        modelId,
        kvDtype,
        numLayers,
        kvHeadsPerRank,
        headSize,
        tpSize,
        tpRank,
        chunkTokens,
        mla,
        "token-major",
        0);
  }

  /** The canonical text that {@link #id()} hashes (docs/keys.md). */
  public String canonical() {
    return "kvtier/2;model="
        + modelId
        + ";dtype="
        + kvDtype
        + ";layers="
        + numLayers
        + ";first_layer="
        + firstLayer
        + ";kv_heads="
        + kvHeadsPerRank
        + ";head_size="
        + headSize
        + ";mla="
        + mla
        + ";tp="
        + tpSize
        + ";rank="
        + (mla ? "all" : Integer.toString(tpRank))
        + ";chunk="
        + chunkTokens
        + ";order="
        + chunkOrder
        + (kvGroups.isEmpty() ? "" : ";groups=" + kvGroups);
  }

  /** The 64-bit namespace id: h1 of MurmurHash3_x64_128 of {@link #canonical()} in UTF-8. */
  public long id() {
    return Murmur3x64.hash(canonical().getBytes(StandardCharsets.UTF_8), ChunkHasher.SEED)[0];
  }
}
