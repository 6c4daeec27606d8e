package io.kvtier.wire;

import io.kvtier.memory.ChunkBuffer;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;

/**
 * Where the bytes of the value a decoder is receiving go: its {@link ChunkBuffer}, or nowhere when
 * the value is discarded. Bytes reach it two ways: {@link #receiveBuffer()} lets the socket be read
 * straight into the buffer ({@link SlotReceiveAllocator}), and {@link #copyFrom} takes what an
 * ordinary read brought in with the value's header.
 *
 * <p>Slot reads are at most {@value #SLOT_READ_BYTES} bytes. Reading a 4 MiB value in one call (as
 * much as the socket holds) made loopback transfers 10–20 % slower than 64 KiB reads, on both ends,
 * most likely because the kernel then copies out of socket buffers that have left the CPU caches
 * and the sender waits longer for window (docs/benchmarks.md).
 *
 * <p>Confined to the channel's event loop.
 */
public final class ValueSink {
  /** The most bytes one slot read asks for, and the least left in a value for a slot read. */
  public static final int SLOT_READ_BYTES = 64 << 10;

  private ChunkBuffer target; // null while discarding
  private long offset;
  private long remaining;
  private ByteBuf handedOut; // the receive buffer over the slot given to the allocator, if any

  /** Starts a value of {@code length} bytes going to {@code target}, or discarded if null. */
  public void start(ChunkBuffer target, long length) {
    this.target = target;
    this.offset = 0;
    this.remaining = length;
  }

  /** Bytes of the current value still to come. */
  public long remaining() {
    return remaining;
  }

  /**
   * An empty buffer over the next bytes of the value's slot, for the socket to be read into; null
   * when the value is discarded or fewer than {@value #SLOT_READ_BYTES} bytes are left.
   */
  public ByteBuf receiveBuffer() {
    if (target == null || remaining < SLOT_READ_BYTES) {
      return null;
    }
    handedOut =
        Unpooled.wrappedBuffer(target.segment().asSlice(offset, SLOT_READ_BYTES).asByteBuffer())
            .clear(); // empty, with the read's bound as capacity
    return handedOut;
  }

  /**
   * Whether {@code in} is the buffer {@link #receiveBuffer()} handed out; if so its bytes are
   * already in place, they are counted and {@code in} is released.
   */
  public boolean tookSlotRead(ByteBuf in) {
    if (in != handedOut) {
      return false;
    }
    handedOut = null;
    int n = in.readableBytes();
    in.release();
    offset += n;
    remaining -= n;
    return true;
  }

  /** Copies (or skips, when discarding) as many of the value's bytes as {@code in} holds. */
  public void copyFrom(ByteBuf in) {
    int n = (int) Math.min(remaining, in.readableBytes());
    if (target != null) {
      in.readBytes(target.segment().asSlice(offset, n).asByteBuffer());
    } else {
      in.skipBytes(n);
    }
    offset += n;
    remaining -= n;
  }

  /** The value's buffer once every byte has arrived (null if discarded); the caller owns it. */
  public ChunkBuffer take() {
    if (remaining != 0) {
      throw new IllegalStateException(remaining + " bytes of the value still to come");
    }
    ChunkBuffer t = target;
    target = null;
    return t;
  }

  /** Drops the value being received, releasing its buffer. */
  public void release() {
    if (target != null) {
      target.release();
      target = null;
    }
    remaining = 0;
  }
}
