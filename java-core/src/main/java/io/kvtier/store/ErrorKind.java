package io.kvtier.store;

/**
 * What went wrong, for counting: every failure a tier or the engine turns into a miss or a dropped
 * save is counted under one of these kinds ({@link ErrorTally}), and the counts reach the stats by
 * kind ({@link StoreStats#errors()}). Kinds are decided from exception types and reply codes where
 * they are raised, never from message text.
 */
public enum ErrorKind {
  // ---- any tier
  /** No free CPU-pool buffer to receive a value into; the read is a miss. */
  NO_BUFFER("no buffer"),

  // ---- remote tiers
  /** The server cannot be reached, refused the connection, or the connection was lost. */
  UNAVAILABLE("unavailable"),
  /** A request got no reply within {@code remote_timeout_ms}. */
  TIMEOUT("timeout"),
  /**
   * A bounded queue is full and the request is refused at once: too many requests outstanding on a
   * remote store that is not answering, or too many reads waiting for the disk tier's readers.
   */
  BACKLOG("backlog"),
  /** A Redis cluster redirected a request (MOVED/ASK) to another node. */
  MOVED("moved"),
  /** The server answered with an error reply. */
  SERVER_ERROR("server error"),
  /** The server sent something the protocol does not allow. */
  PROTOCOL("protocol"),
  /** A remote request failed for another reason. */
  REMOTE_FAILED("error"),

  // ---- disk tier
  /** A file's header, length or checksum does not check out; the file is deleted. */
  CORRUPT_FILE("corrupt file"),
  /** A file in the index was deleted behind kvtier's back. */
  FILE_MISSING("file missing"),
  /** Reading a file failed. */
  READ_FAILED("read failed"),
  /** Writing a file failed for another reason than space or permissions. */
  WRITE_FAILED("write failed"),
  /** The file system has no space left. */
  DISK_FULL("disk full"),
  /** The directory or file system cannot be written. */
  READ_ONLY("read-only"),
  /** A file could not be deleted. */
  DELETE_FAILED("delete failed"),
  /** A directory could not be listed at start-up. */
  SCAN_FAILED("scan failed"),
  /** A remote request not sent: the store stopped answering in time and is left alone a while. */
  SKIPPED("skipped"),
  /** A partial file of a write that never finished (the process died) was found and removed. */
  PARTIAL_FILE("partial file"),

  // ---- the engine's data movers
  /** A save was discarded (a copy out of the KV cache failed). */
  SAVE_FAILED("save failed"),
  /** A load was abandoned (a copy into the KV cache failed); its tokens are recomputed. */
  LOAD_FAILED("load failed"),
  /** A background transfer failed. */
  TRANSFER_FAILED("transfer failed");

  private final String label;

  ErrorKind(String label) {
    this.label = label;
  }

  /** The kind as log lines and stats name it, e.g. {@code "disk full"}. */
  public String label() {
    return label;
  }

  /** The label with spaces and dashes as underscores, e.g. {@code "disk_full"} (stat names). */
  public String statName() {
    return label.replace(' ', '_').replace('-', '_');
  }

  @Override
  public String toString() {
    return label;
  }
}
