package io.kvtier.wire;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** A value's bytes arriving through slot reads and ordinary reads, as the decoders drive it. */
class ValueSinkTest {
  static final int VALUE = 3 * ValueSink.SLOT_READ_BYTES + 12_345;

  ChunkPool pool;
  final ValueSink sink = new ValueSink();

  @BeforeEach
  void setUp() {
    pool = new ChunkPool(MmapAllocator.INSTANCE, VALUE, 4L * VALUE, 1 << 20);
  }

  @AfterEach
  void tearDown() {
    assertEquals(0, pool.inUseSlots(), "a value buffer leaked");
    pool.close();
  }

  static byte[] bytes(int n, long seed) {
    byte[] b = new byte[n];
    new Random(seed).nextBytes(b);
    return b;
  }

  /** What a socket read into {@code buffer} would do: writes up to its capacity from src. */
  static int fill(ByteBuf buffer, byte[] src, int from) {
    int n = Math.min(buffer.writableBytes(), src.length - from);
    buffer.writeBytes(src, from, n);
    return n;
  }

  /** Starts receiving a value into a fresh buffer, which it returns. */
  ChunkBuffer startValue() {
    ChunkBuffer target = pool.tryAllocate(VALUE);
    sink.start(target, VALUE);
    return target;
  }

  @Test
  void slotReadsAreBoundedAndTheRestIsCopied() {
    byte[] want = bytes(VALUE, 1);
    ChunkBuffer target = startValue();
    int at = 0;
    int slotReads = 0;
    for (ByteBuf b; (b = sink.receiveBuffer()) != null; slotReads++) {
      assertEquals(0, b.readableBytes());
      assertEquals(ValueSink.SLOT_READ_BYTES, b.capacity(), "one read asks for at most 64 KiB");
      at += fill(b, want, at);
      assertTrue(sink.tookSlotRead(b));
    }
    assertEquals(3, slotReads);
    assertEquals(12_345, sink.remaining(), "fewer than 64 KiB left: an ordinary read's turn");
    // An ordinary read brings the rest and bytes of what follows the value.
    ByteBuf ordinary = Unpooled.buffer();
    ordinary.writeBytes(want, at, want.length - at).writeBytes(new byte[] {'\r', '\n'});
    sink.copyFrom(ordinary);
    assertEquals(2, ordinary.readableBytes(), "bytes after the value are left for the decoder");
    assertEquals(0, sink.remaining());
    assertSame(target, sink.take());
    assertArrayEquals(want, target.segment().toArray(ValueLayout.JAVA_BYTE));
    target.release();
  }

  @Test
  void aSlotReadShorterThanAskedCountsWhatArrived() {
    byte[] want = bytes(VALUE, 2);
    ChunkBuffer target = startValue();
    int at = 0;
    while (sink.remaining() > 0) {
      ByteBuf b = sink.receiveBuffer();
      if (b == null) {
        sink.copyFrom(Unpooled.wrappedBuffer(want, at, (int) sink.remaining()));
        break;
      }
      b.writeBytes(want, at, 1000); // the socket had only 1000 bytes
      at += 1000;
      assertTrue(sink.tookSlotRead(b));
      assertEquals(VALUE - at, sink.remaining());
    }
    assertArrayEquals(want, sink.take().segment().toArray(ValueLayout.JAVA_BYTE));
    target.release();
  }

  @Test
  void aDiscardedValueIsSkippedWithoutSlotReads() {
    sink.start(null, VALUE);
    assertNull(sink.receiveBuffer(), "nothing to read into");
    ByteBuf in = Unpooled.wrappedBuffer(new byte[VALUE + 5]);
    sink.copyFrom(in);
    assertEquals(5, in.readableBytes());
    assertNull(sink.take());
  }

  @Test
  void onlyTheHandedOutBufferCountsAsASlotRead() {
    ChunkBuffer target = startValue();
    ByteBuf other = Unpooled.buffer(16).writeZero(16);
    assertFalse(sink.tookSlotRead(other));
    assertEquals(VALUE, sink.remaining());
    assertThrows(IllegalStateException.class, sink::take, "the value is not complete");
    sink.release();
    assertEquals(0, pool.inUseSlots(), "a dropped value's buffer goes back");
    assertNull(sink.receiveBuffer());
  }
}
