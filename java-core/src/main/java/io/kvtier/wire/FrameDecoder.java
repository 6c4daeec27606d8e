package io.kvtier.wire;

import io.kvtier.memory.ChunkBuffer;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;

/**
 * Splits the byte stream into {@link Protocol} frames. Control frames are gathered (bounded by
 * {@link Protocol#MAX_CONTROL_FRAME}) and handed over whole; the value bytes of VALUE and PUT
 * frames go to a {@link ValueSink}: into the {@link ChunkBuffer} the listener provides, read from
 * the socket straight into it where possible, else copied once from the receive buffer — no
 * accumulation of large values.
 *
 * <p>Confined to the channel's event loop.
 */
public final class FrameDecoder extends ChannelInboundHandlerAdapter
    implements SlotReceiveAllocator.SlotReceiver {
  /** What the decoder reports to. Methods run on the event loop. */
  public interface Listener {
    /** A whole control frame; {@code payload} is released after the call. */
    void onFrame(ChannelHandlerContext ctx, byte op, int requestId, ByteBuf payload);

    /**
     * A VALUE or PUT frame's fixed part ({@code prefix}: the index or the key) has arrived; returns
     * where its {@code valueBytes} go, or null to discard them.
     *
     * @throws ProtocolException if the frame is not acceptable (the channel is then closed)
     */
    ChunkBuffer onBulkStart(
        ChannelHandlerContext ctx, byte op, int requestId, ByteBuf prefix, long valueBytes)
        throws ProtocolException;

    /** Every value byte has arrived ({@code target} as returned by onBulkStart, maybe null). */
    void onBulkEnd(ChannelHandlerContext ctx, byte op, int requestId, ChunkBuffer target);

    /** A frame was refused ({@code e} says why); an ERROR goes out and the channel is closed. */
    default void onProtocolError(ProtocolException e) {}
  }

  /** A peer that breaks the protocol; the message goes into an ERROR frame where possible. */
  public static final class ProtocolException extends Exception {
    private static final long serialVersionUID = 1L;
    public final short code;

    public ProtocolException(short code, String message) {
      super(message);
      this.code = code;
    }
  }

  private final Listener listener;
  private final long maxValueBytes;
  private final ByteBuf small = Unpooled.buffer(64); // header, prefix or control payload

  private static final int FAILED = -1;
  private int state; // 0 header, 1 control payload, 2 bulk prefix, 3 bulk value, FAILED
  private byte op;
  private int requestId;
  private long remaining; // bytes of the current header or control payload still to come
  private final ValueSink value = new ValueSink();

  public FrameDecoder(Listener listener, long maxValueBytes) {
    this.listener = listener;
    this.maxValueBytes = maxValueBytes;
  }

  /**
   * While value bytes are expected, a receive buffer over the rest of the value's slot (so the
   * socket is read straight into it), else null. Called by {@link SlotReceiveAllocator}.
   */
  @Override
  public ByteBuf slotReceiveBuffer() {
    return state == 3 ? value.receiveBuffer() : null;
  }

  @Override
  public void channelRead(ChannelHandlerContext ctx, Object msg) throws Exception {
    ByteBuf in = (ByteBuf) msg;
    if (value.tookSlotRead(in)) { // read straight into the slot: the bytes are already in place
      if (value.remaining() == 0) {
        bulkEnd(ctx);
      }
      return;
    }
    try {
      while (in.isReadable() && state != FAILED) {
        step(ctx, in);
      }
    } catch (ProtocolException e) {
      fail(ctx, e);
    } finally {
      in.release();
    }
  }

  private void step(ChannelHandlerContext ctx, ByteBuf in) throws ProtocolException {
    switch (state) {
      case 0 -> {
        if (!gather(in, Protocol.HEADER_BYTES)) {
          return;
        }
        long length = small.readUnsignedIntLE();
        op = small.readByte();
        requestId = small.readIntLE();
        small.clear();
        long payload = length - 5;
        if (payload < 0) {
          throw new ProtocolException(Protocol.ERR_PROTOCOL, "frame length " + length);
        }
        if (op == Protocol.VALUE || op == Protocol.PUT) {
          int prefix = op == Protocol.VALUE ? 2 : Protocol.KEY_BYTES;
          if (payload < prefix) {
            throw new ProtocolException(Protocol.ERR_PROTOCOL, "short frame");
          }
          if (payload - prefix > maxValueBytes) {
            throw new ProtocolException(
                Protocol.ERR_TOO_LARGE,
                "value of " + (payload - prefix) + " bytes exceeds " + maxValueBytes);
          }
          remaining = payload;
          state = 2;
        } else {
          if (payload > Protocol.MAX_CONTROL_FRAME) {
            throw new ProtocolException(Protocol.ERR_TOO_LARGE, "frame of " + payload + " bytes");
          }
          remaining = payload;
          state = 1;
          if (payload == 0) {
            control(ctx);
          }
        }
      }
      case 1 -> {
        if (gather(in, (int) remaining)) {
          control(ctx);
        }
      }
      case 2 -> {
        int prefix = op == Protocol.VALUE ? 2 : Protocol.KEY_BYTES;
        if (!gather(in, prefix)) {
          return;
        }
        long valueBytes = remaining - prefix;
        value.start(listener.onBulkStart(ctx, op, requestId, small, valueBytes), valueBytes);
        small.clear();
        state = 3;
        if (valueBytes == 0) {
          bulkEnd(ctx);
        }
      }
      case 3 -> {
        value.copyFrom(in);
        if (value.remaining() == 0) {
          bulkEnd(ctx);
        }
      }
      default -> throw new IllegalStateException("state " + state);
    }
  }

  /** Accumulates until {@code small} holds {@code n} bytes. */
  private boolean gather(ByteBuf in, int n) {
    int need = n - small.readableBytes();
    if (need > 0) {
      small.writeBytes(in, Math.min(need, in.readableBytes()));
    }
    return small.readableBytes() >= n;
  }

  private void control(ChannelHandlerContext ctx) {
    state = 0;
    ByteBuf payload = small.retainedSlice();
    try {
      listener.onFrame(ctx, op, requestId, payload);
    } finally {
      payload.release();
      small.clear();
    }
  }

  private void bulkEnd(ChannelHandlerContext ctx) {
    state = 0;
    listener.onBulkEnd(ctx, op, requestId, value.take());
  }

  private void fail(ChannelHandlerContext ctx, ProtocolException e) {
    state = FAILED;
    listener.onProtocolError(e);
    value.release();
    ByteBuf out = ctx.alloc().buffer();
    byte[] msg = String.valueOf(e.getMessage()).getBytes(java.nio.charset.StandardCharsets.UTF_8);
    Protocol.header(out, Protocol.ERROR, requestId, 4 + msg.length);
    out.writeShortLE(e.code);
    out.writeShortLE(msg.length);
    out.writeBytes(msg);
    ctx.writeAndFlush(out).addListener(f -> ctx.close());
  }

  @Override
  public void channelInactive(ChannelHandlerContext ctx) throws Exception {
    value.release();
    small.release();
    super.channelInactive(ctx);
  }
}
