package io.kvtier.engine;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import java.util.Set;
import java.util.function.BiPredicate;

/**
 * One prompt's chunks on their way into the tiers: {@link KvEngine#beginStore} reserves a buffer
 * for each chunk not stored yet, a data mover writes the chunk bytes into {@link #buffer}, and
 * {@link #commit} makes them visible (or {@link #abort} discards them). Nothing is visible to a
 * lookup before the commit (DESIGN invariant 3).
 *
 * <p>Ownership: the transaction owns one reference to each buffer until it ends; a mover borrows
 * the buffer for the copy and must not keep it past the end. Ending it (commit, abort, or close
 * without commit) releases every buffer exactly once, so a buffer can never be used after its slot
 * went back to the pool without an {@link IllegalStateException} from the buffer.
 *
 * <p>Confined: one thread at a time (a worker thread, or the thread of a layerwise save).
 */
public final class StoreTransaction implements AutoCloseable {
  private final ChunkKey[] keys;
  private final ChunkBuffer[] buffers;
  private final int tokenCount;
  private final Set<ChunkKey> storing;
  private final BiPredicate<ChunkKey, ChunkBuffer> put;
  private boolean ended;
  private long storedBytes;

  /**
   * @param storing the engine's set of keys being stored; the transaction removes its keys when it
   *     ends
   * @param put stores one chunk in the tiers, true if it became visible
   */
  StoreTransaction(
      ChunkKey[] keys,
      ChunkBuffer[] buffers,
      int tokenCount,
      Set<ChunkKey> storing,
      BiPredicate<ChunkKey, ChunkBuffer> put) {
    this.keys = keys;
    this.buffers = buffers;
    this.tokenCount = tokenCount;
    this.storing = storing;
    this.put = put;
  }

  /** Chunks in the prompt (including those already stored, which have no buffer). */
  public int chunks() {
    return buffers.length;
  }

  /** Tokens in the prompt. */
  public int tokenCount() {
    return tokenCount;
  }

  /**
   * The buffer to write chunk {@code c} into, or null when the chunk is stored already or found no
   * room.
   *
   * @throws IllegalStateException if the transaction has ended
   */
  public ChunkBuffer buffer(int c) {
    checkOpen();
    return buffers[c];
  }

  /** Bytes of the chunks that became visible at the commit (0 before it, or after an abort). */
  public long storedBytes() {
    return storedBytes;
  }

  /** Whether no chunk has a buffer (nothing to write). */
  public boolean isEmpty() {
    for (ChunkBuffer b : buffers) {
      if (b != null) {
        return false;
      }
    }
    return true;
  }

  /**
   * Makes the written chunks visible and ends the transaction.
   *
   * @return chunks that became visible
   * @throws IllegalStateException if the transaction has ended
   */
  public int commit() {
    checkOpen();
    return end(true);
  }

  /** Discards the chunks and ends the transaction. Idempotent. */
  public void abort() {
    if (!ended) {
      end(false);
    }
  }

  /** Aborts unless committed. */
  @Override
  public void close() {
    abort();
  }

  private int end(boolean visible) {
    ended = true;
    int stored = 0;
    try {
      for (int c = 0; c < buffers.length; c++) {
        if (visible && buffers[c] != null && put.test(keys[c], buffers[c])) {
          stored++;
          storedBytes += buffers[c].length();
        }
      }
    } finally {
      for (int c = 0; c < buffers.length; c++) {
        if (buffers[c] != null) {
          storing.remove(keys[c]);
          buffers[c].release();
        }
      }
    }
    return stored;
  }

  private void checkOpen() {
    if (ended) {
      throw new IllegalStateException("the store transaction has ended");
    }
  }
}
