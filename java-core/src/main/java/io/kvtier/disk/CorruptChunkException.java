package io.kvtier.disk;

import java.io.IOException;

/** A chunk file whose header or data does not check out; the file is deleted and counted. */
public final class CorruptChunkException extends IOException {
  private static final long serialVersionUID = 1L;

  /** Creates an exception saying what is wrong with the file. */
  public CorruptChunkException(String message) {
    super(message);
  }

  /** Creates an exception saying what is wrong with the file, found through {@code cause}. */
  public CorruptChunkException(String message, Throwable cause) {
    super(message, cause);
  }
}
