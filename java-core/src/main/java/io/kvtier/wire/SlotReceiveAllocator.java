package io.kvtier.wire;

import io.netty.bootstrap.Bootstrap;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.channel.AdaptiveRecvByteBufAllocator;
import io.netty.channel.ChannelConfig;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.RecvByteBufAllocator;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioSocketChannel;
import io.netty.util.UncheckedBooleanSupplier;
import java.util.function.Function;

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

  /**
   * A client bootstrap (NIO, {@code TCP_NODELAY}, connect timeout) whose channels receive values
   * into slots: for each channel {@code pipeline} adds the handlers and returns the decoder whose
   * slots its reads go to.
   */
  public static Bootstrap client(
      EventLoopGroup group,
      long connectTimeoutMillis,
      Function<SocketChannel, SlotReceiver> pipeline) {
    return new Bootstrap()
        .group(group)
        .channel(NioSocketChannel.class)
        .option(ChannelOption.TCP_NODELAY, true)
        .option(ChannelOption.CONNECT_TIMEOUT_MILLIS, (int) connectTimeoutMillis)
        .handler(
            new ChannelInitializer<SocketChannel>() {
              @Override
              protected void initChannel(SocketChannel c) {
                c.config().setRecvByteBufAllocator(new SlotReceiveAllocator(pipeline.apply(c)));
              }
            });
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
