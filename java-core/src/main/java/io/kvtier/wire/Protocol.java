package io.kvtier.wire;

import io.kvtier.key.ChunkKey;
import io.netty.buffer.ByteBuf;
import java.nio.charset.StandardCharsets;

/**
 * The kvtier cache server's wire protocol (version 1). All integers are little-endian.
 *
 * <pre>
 *   frame   = u32 length (of what follows) | u8 op | u32 request id | payload
 *   key     = u64 namespace | u64 h1 | u64 h2                           (24 bytes)
 *
 *   HELLO      c→s  u32 magic "KVTS" | u16 version | u16 n | n bytes of shared secret
 *   HELLO_OK   s→c  u16 version
 *   ERROR      s→c  u16 code | u16 n | n bytes UTF-8 message        (the server then closes)
 *   GET        c→s  u16 count | count × key
 *   VALUE      s→c  u16 index | value bytes (the rest of the frame)  one per key found
 *   MISS       s→c  u16 index                                        one per key not found
 *   PUT        c→s  key | value bytes (the rest of the frame)
 *   PUT_DONE   s→c  u8 status (0 stored, 1 already there, 2 dropped: no room)
 *   EXISTS     c→s  u16 count | count × key
 *   EXISTS_N   s→c  u16 leading keys present
 *   DELETE     c→s  key
 *   DELETED    s→c  u8 1 if it was there, else 0
 * </pre>
 *
 * A client must send HELLO first; anything else, a wrong magic or version, a wrong secret, a frame
 * over the limits (a value larger than the server's slots, a batch over {@link #MAX_BATCH} keys, a
 * control frame over {@link #MAX_CONTROL_FRAME} bytes) gets ERROR and the connection is closed.
 * Value bytes are read from the socket straight into pinned buffers and written from them.
 */
public final class Protocol {
  private Protocol() {}

  /** "KVTS" read as a little-endian u32. */
  public static final int MAGIC = 0x5354564B;

  public static final int VERSION = 1;

  public static final byte HELLO = 1;
  public static final byte HELLO_OK = 2;
  public static final byte ERROR = 3;
  public static final byte GET = 4;
  public static final byte VALUE = 5;
  public static final byte MISS = 6;
  public static final byte PUT = 7;
  public static final byte PUT_DONE = 8;
  public static final byte EXISTS = 9;
  public static final byte EXISTS_N = 10;
  public static final byte DELETE = 11;
  public static final byte DELETED = 12;

  public static final byte STORED = 0;
  public static final byte DUPLICATE = 1;
  public static final byte DROPPED = 2;

  /** Bytes before the payload: u32 length, u8 op, u32 request id. */
  public static final int HEADER_BYTES = 9;

  public static final int KEY_BYTES = 24;

  /** Most keys in one GET or EXISTS. */
  public static final int MAX_BATCH = 4096;

  /** Largest frame that is not a VALUE or PUT (they are bounded by the slot size). */
  public static final int MAX_CONTROL_FRAME = 8 + 2 * 2 + MAX_BATCH * KEY_BYTES;

  public static final short ERR_BAD_HELLO = 1;
  public static final short ERR_AUTH = 2;
  public static final short ERR_TOO_LARGE = 3;
  public static final short ERR_PROTOCOL = 4;

  /** Writes a frame header; {@code payloadBytes} excludes the header. */
  public static void header(ByteBuf out, byte op, int requestId, long payloadBytes) {
    out.writeIntLE((int) (payloadBytes + 5));
    out.writeByte(op);
    out.writeIntLE(requestId);
  }

  public static void key(ByteBuf out, ChunkKey k) {
    out.writeLongLE(k.namespace());
    out.writeLongLE(k.h1());
    out.writeLongLE(k.h2());
  }

  public static ChunkKey key(ByteBuf in) {
    return new ChunkKey(in.readLongLE(), in.readLongLE(), in.readLongLE());
  }

  public static String string(ByteBuf in) {
    int n = in.readUnsignedShortLE();
    return in.readCharSequence(n, StandardCharsets.UTF_8).toString();
  }
}
