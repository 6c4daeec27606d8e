package io.kvtier.engine;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * A model's KV cache groups as vLLM's hybrid KV cache manager forms them: which group each layer is
 * in, and each group's sliding window (0: full attention). Every group has its own block table
 * (vLLM allocates one block id per group for each block of a request's tokens, from one pool); the
 * layers of different groups may view the same memory, so a group's block ids apply to its own
 * layers only.
 *
 * <p>A worker receives a request's tables in one array, block position by block position: entry
 * {@code i * count() + g} is group {@code g}'s block for the request's tokens {@code [i *
 * blockSize, (i + 1) * blockSize)} ({@link #split}). With one group that is vLLM's own table.
 *
 * <p>Immutable.
 */
public final class CacheGroups {
  private final int[] layerGroup;
  private final int[] windows;
  private final int[][] layers;

  /**
   * Groups of {@code layerGroup.length} layers: layer {@code l} is in group {@code layerGroup[l]};
   * group {@code g} attends to a sliding window of {@code windows[g]} tokens (0: full attention).
   *
   * @throws IllegalArgumentException if a layer's group is not one of {@code windows}, a group has
   *     no layer, or a window is negative
   */
  public CacheGroups(int[] layerGroup, int[] windows) {
    if (layerGroup.length == 0 || windows.length == 0) {
      throw new IllegalArgumentException("a model has at least one layer and one group");
    }
    List<List<Integer>> members = new ArrayList<>();
    for (int g = 0; g < windows.length; g++) {
      if (windows[g] < 0) {
        throw new IllegalArgumentException("group " + g + " has window " + windows[g]);
      }
      members.add(new ArrayList<>());
    }
    for (int l = 0; l < layerGroup.length; l++) {
      int g = layerGroup[l];
      if (g < 0 || g >= windows.length) {
        throw new IllegalArgumentException(
            "layer " + l + " is in group " + g + "; there are " + windows.length);
      }
      members.get(g).add(l);
    }
    this.layers = new int[windows.length][];
    for (int g = 0; g < windows.length; g++) {
      if (members.get(g).isEmpty()) {
        throw new IllegalArgumentException("group " + g + " has no layer");
      }
      layers[g] = members.get(g).stream().mapToInt(Integer::intValue).toArray();
    }
    this.layerGroup = layerGroup.clone();
    this.windows = windows.clone();
  }

  /** One group of {@code layerCount} full-attention layers (a model without hybrid groups). */
  public static CacheGroups fullAttention(int layerCount) {
    return new CacheGroups(new int[layerCount], new int[] {0});
  }

  /** One group of {@code layerCount} layers that all attend to a sliding window. */
  public static CacheGroups slidingWindow(int layerCount, int window) {
    if (window <= 0) {
      throw new IllegalArgumentException("a sliding window is at least 1 token, got " + window);
    }
    return new CacheGroups(new int[layerCount], new int[] {window});
  }

  public int count() {
    return windows.length;
  }

  public int layerCount() {
    return layerGroup.length;
  }

  /** The group layer {@code layer} is in. */
  public int groupOf(int layer) {
    return layerGroup[layer];
  }

  /** The layers of group {@code g}, in model order (do not modify). */
  int[] layers(int g) {
    return layers[g];
  }

  /** Group {@code g}'s sliding window in tokens; 0 for full attention. */
  public int window(int g) {
    return windows[g];
  }

  /** Whether some group attends to a sliding window. */
  public boolean slides() {
    return Arrays.stream(windows).anyMatch(w -> w > 0);
  }

  /**
   * The first token a chunk ending at token {@code end} keeps for a sliding window of {@code
   * window} tokens: the start of the whole vLLM blocks of {@code blockTokens} that hold the window
   * of the token before {@code end} (a load of a prompt that ends at {@code end} stops one token
   * before it).
   */
  static int keptFrom(int end, int window, int blockTokens) {
    return Math.max(0, end - window) / blockTokens * blockTokens;
  }

  /** The widest window when every group slides (a hit then needs no earlier tokens); else 0. */
  public int slidingOnly() {
    return Arrays.stream(windows).allMatch(w -> w > 0) ? Arrays.stream(windows).max().orElse(0) : 0;
  }

  /** Whether this is one group of full-attention layers (every block stays the request's). */
  public boolean plain() {
    return windows.length == 1 && windows[0] == 0;
  }

  /**
   * The groups' block tables out of one table of {@code count()} entries per block position.
   *
   * @throws IllegalArgumentException if the table's length is not a multiple of {@link #count()}
   */
  public int[][] split(int[] blockIds) {
    int n = windows.length;
    if (n == 1) {
      return new int[][] {blockIds};
    }
    if (blockIds.length % n != 0) {
      throw new IllegalArgumentException(
          "a block table of "
              + blockIds.length
              + " entries is not "
              + n
              + " groups' tables block by block");
    }
    int[][] tables = new int[n][blockIds.length / n];
    for (int i = 0; i < blockIds.length; i++) {
      tables[i % n][i / n] = blockIds[i];
    }
    return tables;
  }

  /**
   * The text that names this grouping in the key namespace ({@code io.kvtier.key.KeyNamespace}):
   * empty for {@link #plain} (so such models keep their keys), else each group's kind ({@code full}
   * or {@code sliding<window>}) and layers, e.g. {@code sliding200:0,2+full:1,3}.
   */
  public String describe() {
    if (plain()) {
      return "";
    }
    StringBuilder s = new StringBuilder();
    for (int g = 0; g < windows.length; g++) {
      if (g > 0) {
        s.append('+');
      }
      s.append(windows[g] == 0 ? "full" : "sliding" + windows[g]).append(':');
      for (int i = 0; i < layers[g].length; i++) {
        s.append(i > 0 ? "," : "").append(layers[g][i]);
      }
    }
    return s.toString();
  }

  @Override
  public String toString() {
    return plain() ? "full attention" : describe();
  }
}
