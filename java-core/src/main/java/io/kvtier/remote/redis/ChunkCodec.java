package io.kvtier.remote.redis;

import io.kvtier.memory.ChunkBuffer;
import io.lettuce.core.codec.RedisCodec;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongFunction;

/**
 * Lettuce codec with {@code byte[]} keys and {@link ChunkBuffer} values: a value is decoded
 * straight from Netty's receive buffer into a pinned buffer (one copy) and encoded as a view of the
 * pinned buffer (no copy on our side).
 *
 * <p>A decoded buffer belongs to whoever receives the command's result; a result nobody receives (a
 * timed-out get) must be released by the code that gave up on it. Thread-safe.
 */
final class ChunkCodec implements RedisCodec<byte[], ChunkBuffer> {
  private final LongFunction<ChunkBuffer> buffers;
  final LongAdder noBuffer = new LongAdder();

  ChunkCodec(LongFunction<ChunkBuffer> buffers) {
    this.buffers = buffers;
  }

  @Override
  public byte[] decodeKey(ByteBuffer bytes) {
    byte[] k = new byte[bytes.remaining()];
    bytes.get(k);
    return k;
  }

  /** Returns null (counted) when no buffer is free or the value does not fit a slot. */
  @Override
  public ChunkBuffer decodeValue(ByteBuffer bytes) {
    int n = bytes.remaining();
    ChunkBuffer b = allocate(n);
    if (b != null) {
      MemorySegment.copy(MemorySegment.ofBuffer(bytes), 0, b.segment(), 0, n);
    }
    return b;
  }

  /** A buffer for a value of {@code n} bytes, or null (counted) when none is free or fits. */
  ChunkBuffer allocate(long n) {
    ChunkBuffer b;
    try {
      b = buffers.apply(n);
    } catch (IllegalArgumentException tooLarge) {
      b = null;
    }
    if (b == null) {
      noBuffer.increment();
    }
    return b;
  }

  @Override
  public ByteBuffer encodeKey(byte[] key) {
    return ByteBuffer.wrap(key);
  }

  @Override
  public ByteBuffer encodeValue(ChunkBuffer value) {
    return value.segment().asByteBuffer();
  }
}
