package io.kvtier.wire;

import java.io.IOException;

/**
 * A request that {@link PipelinedConnection#send} refused before writing it; nothing was sent and
 * no reply will come. The {@link Reason} says how to count it.
 */
public final class RejectedRequestException extends IOException {
  private static final long serialVersionUID = 1L;

  /** Why a request was refused. */
  public enum Reason {
    /** No connection is open (the peer is down, or the connection is being re-established). */
    NOT_CONNECTED,
    /** Too many replies are outstanding on the connection: the peer is not keeping up. */
    BACKLOG,
    /** The connection was closed by its owner, or is closing. */
    CLOSED
  }

  private final Reason reason;

  public RejectedRequestException(Reason reason, String message) {
    super(message);
    this.reason = reason;
  }

  public Reason reason() {
    return reason;
  }
}
