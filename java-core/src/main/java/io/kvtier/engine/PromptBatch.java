package io.kvtier.engine;

import java.util.Arrays;

/**
 * Several prompts in one {@code int[]}, as the batched calls take them: prompt {@code i} is {@code
 * tokens[offsets[i], offsets[i+1])}, and per-chunk arguments (addresses) of all prompts follow one
 * another in one {@code long[]} (prompt 0's chunks, then prompt 1's, ...). Checks the offsets once
 * and runs an operation per prompt. Immutable; the arrays are the caller's and are not copied.
 */
final class PromptBatch {
  /** An operation on one prompt: (tokens, tokenCount, its chunks' addresses) to a count. */
  @FunctionalInterface
  interface PromptOp {
    int apply(int[] tokens, int tokenCount, long[] addresses);
  }

  /** How many chunks a prompt of a given token count has. */
  @FunctionalInterface
  interface ChunkCount {
    int of(int tokenCount);
  }

  private final int[] tokens;
  private final int[] offsets;

  /**
   * @throws IllegalArgumentException if the offsets do not start at a value {@code >= 0} or are not
   *     non-decreasing within {@code tokens}
   */
  PromptBatch(int[] tokens, int[] offsets) {
    if (offsets.length == 0 || offsets[0] < 0) {
      throw new IllegalArgumentException("offsets must start with a value >= 0");
    }
    for (int i = 1; i < offsets.length; i++) {
      if (offsets[i] < offsets[i - 1] || offsets[i] > tokens.length) {
        throw new IllegalArgumentException(
            "offsets["
                + i
                + "]="
                + offsets[i]
                + " must be in ["
                + offsets[i - 1]
                + ", "
                + tokens.length
                + "]");
      }
    }
    this.tokens = tokens;
    this.offsets = offsets;
  }

  /** Prompts in the batch. */
  int size() {
    return offsets.length - 1;
  }

  /**
   * Prompt {@code i}'s tokens (the array itself when it starts at 0; the count says where it ends).
   */
  int[] tokens(int i) {
    return offsets[i] == 0 ? tokens : Arrays.copyOfRange(tokens, offsets[i], offsets[i + 1]);
  }

  /** Prompt {@code i}'s token count. */
  int tokenCount(int i) {
    return offsets[i + 1] - offsets[i];
  }

  /**
   * Runs {@code op} on every prompt with its slice of {@code addresses}.
   *
   * @param addressesName how the caller calls {@code addresses}, for the error message
   * @return {@code op}'s result per prompt
   * @throws IllegalArgumentException if {@code addresses} has fewer entries than the batch has
   *     chunks
   */
  int[] perPrompt(long[] addresses, String addressesName, ChunkCount chunks, PromptOp op) {
    int need = 0;
    for (int i = 0; i < size(); i++) {
      need += chunks.of(tokenCount(i));
    }
    if (addresses.length < need) {
      throw new IllegalArgumentException(
          addressesName
              + " has "
              + addresses.length
              + " entries for "
              + need
              + " chunks in the batch");
    }
    int[] result = new int[size()];
    int next = 0;
    for (int i = 0; i < result.length; i++) {
      int n = chunks.of(tokenCount(i));
      result[i] = op.apply(tokens(i), tokenCount(i), Arrays.copyOfRange(addresses, next, next + n));
      next += n;
    }
    return result;
  }
}
