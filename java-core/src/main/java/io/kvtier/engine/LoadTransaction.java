package io.kvtier.engine;

import io.kvtier.memory.ChunkBuffer;
import java.util.List;

/**
 * A prompt's stored chunks held for reading: {@link KvEngine#beginLoad} takes a reference to each
 * chunk of the stored prefix (reading lower tiers where it must), a data mover reads them, and
 * {@link #close} releases them. A held chunk cannot be freed under the reader, even if it is
 * evicted meanwhile.
 *
 * <p>Ownership: the transaction owns one reference to each buffer until {@link #close}; a mover
 * borrows a buffer for the copy and must not keep it past the close.
 *
 * <p>Confined: one thread at a time.
 */
public final class LoadTransaction implements AutoCloseable {
  private final List<ChunkBuffer> buffers;
  private final int firstChunk;
  private final int tokenCount;
  private boolean closed;

  LoadTransaction(List<ChunkBuffer> buffers, int firstChunk, int tokenCount) {
    this.buffers = buffers;
    this.firstChunk = firstChunk;
    this.tokenCount = tokenCount;
  }

  /** The prompt's chunk that {@link #buffer buffer(0)} holds. */
  public int firstChunk() {
    return firstChunk;
  }

  /** How many chunks are held: the contiguous stored run from {@link #firstChunk}. */
  public int size() {
    return buffers.size();
  }

  /** Tokens in the prompt. */
  public int tokenCount() {
    return tokenCount;
  }

  /**
   * Chunk {@code firstChunk() + i}'s bytes.
   *
   * @throws IllegalStateException if the transaction is closed
   */
  public ChunkBuffer buffer(int i) {
    if (closed) {
      throw new IllegalStateException("the load transaction is closed");
    }
    return buffers.get(i);
  }

  /** Releases the chunks. Idempotent. */
  @Override
  public void close() {
    if (!closed) {
      closed = true;
      buffers.forEach(ChunkBuffer::release);
    }
  }
}
