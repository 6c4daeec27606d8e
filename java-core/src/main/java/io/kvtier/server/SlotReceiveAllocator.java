package io.kvtier.server;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.channel.AdaptiveRecvByteBufAllocator;
import io.netty.channel.ChannelConfig;
import io.netty.channel.RecvByteBufAllocator;
import io.netty.util.UncheckedBooleanSupplier;

/**
 * The receive buffers of one channel: while a value is being received, the buffer the socket is
 * read into is the value's pinned slot itself, so the kernel copies straight into it and no user
 * space copy follows; otherwise Netty's adaptive buffers (64 KiB to 4 MiB reads).
 *
 * <p>One instance per channel (it asks that channel's decoder); confined to the channel's event
 * loop.
 */
@SuppressWarnings("deprecation") // ExtendedHandle is how Netty 4.2 still asks for receive buffers
public final class SlotReceiveAllocator implements RecvByteBufAllocator {
  /** A decoder that may want the next read to land in a value's slot. */
  public interface SlotReceiver {
    /**
     * An empty buffer over the rest of the slot being filled, whose capacity bounds the read; null
     * for an ordinary receive buffer. The decoder recognises it in {@code channelRead}: its bytes
     * are then already in place.
     */
    ByteBuf slotReceiveBuffer();
  }

  private final SlotReceiver decoder;
  private final AdaptiveRecvByteBufAllocator adaptive =
      new AdaptiveRecvByteBufAllocator(64 << 10, 1 << 20, 4 << 20);

  public SlotReceiveAllocator(SlotReceiver decoder) {
    this.decoder = decoder;
  }

  @Override
  public Handle newHandle() {
    ExtendedHandle inner = (ExtendedHandle) adaptive.newHandle();
    return new ExtendedHandle() {
      @Override
      public ByteBuf allocate(ByteBufAllocator alloc) {
        ByteBuf slot = decoder.slotReceiveBuffer();
        return slot != null ? slot : inner.allocate(alloc);
      }

      @Override
      public int guess() {
        return inner.guess();
      }

      @Override
      public void reset(ChannelConfig config) {
        inner.reset(config);
      }

      @Override
      public void incMessagesRead(int numMessages) {
        inner.incMessagesRead(numMessages);
      }

      @Override
      public void lastBytesRead(int bytes) {
        inner.lastBytesRead(bytes);
      }

      @Override
      public int lastBytesRead() {
        return inner.lastBytesRead();
      }

      @Override
      public void attemptedBytesRead(int bytes) {
        inner.attemptedBytesRead(bytes);
      }

      @Override
      public int attemptedBytesRead() {
        return inner.attemptedBytesRead();
      }

      @Override
      public boolean continueReading() {
        return inner.continueReading();
      }

      @Override
      public boolean continueReading(UncheckedBooleanSupplier maybeMoreDataSupplier) {
        return inner.continueReading(maybeMoreDataSupplier);
      }

      @Override
      public void readComplete() {
        inner.readComplete();
      }
    };
  }
}
