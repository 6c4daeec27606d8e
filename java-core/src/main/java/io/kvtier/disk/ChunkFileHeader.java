package io.kvtier.disk;

import io.kvtier.key.ChunkKey;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.zip.CRC32C;

/**
 * The first block of every chunk file: what the file holds, so the index can be rebuilt from the
 * files alone after a restart and a damaged file is recognised.
 *
 * <pre>
 *   offset  size  field (little-endian)
 *        0     4  magic 0x4354564B ("KVTC")
 *        4     4  version (1)
 *        8     4  flags (bit 0: data is LZ4-compressed)
 *       12     4  reserved, 0
 *       16     8  key namespace
 *       24     8  key h1
 *       32     8  key h2
 *       40     8  data length: the chunk's bytes
 *       48     8  stored length: bytes after the header block (compressed or not), unpadded
 *       56     4  CRC32C of the stored bytes
 *       60     4  CRC32C of bytes 0..59
 *       64     4  n: block prefixes listed (0 to 251)
 *       68     4  CRC32C of bytes 72..72+16n
 *       72   16n  block prefixes: h1, h2 of each block-aligned prefix, shortest first
 *        -     -  zero up to 4096
 *   4096     -    stored bytes, then zero padding to a multiple of 4096
 * </pre>
 *
 * The block prefixes (docs/keys.md, "Block prefixes") are advisory: files written without them (all
 * zero there) and a list whose checksum fails read as none, and the chunk is still served under its
 * own key.
 *
 * <p>Immutable (the prefix array is not copied and must not be changed).
 */
record ChunkFileHeader(
    ChunkKey key,
    int flags,
    long dataLength,
    long storedLength,
    int dataCrc,
    long[] blockPrefixes) {
  static final int MAGIC = 0x4354564B;
  static final int VERSION = 1;
  static final int FLAG_LZ4 = 1;

  /** Bytes of the header block; data starts here. A multiple of every common block size. */
  static final int BLOCK_BYTES = 4096;

  private static final int PREFIXES_AT = 72;

  /** The most block prefixes a header lists; a chunk with more lists none. */
  static final int MAX_PREFIXES = (BLOCK_BYTES - PREFIXES_AT) / 16;

  private static final ValueLayout.OfInt INT =
      ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
  private static final ValueLayout.OfLong LONG =
      ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

  @Override
  public boolean equals(Object o) {
    return o instanceof ChunkFileHeader h
        && key.equals(h.key)
        && flags == h.flags
        && dataLength == h.dataLength
        && storedLength == h.storedLength
        && dataCrc == h.dataCrc
        && java.util.Arrays.equals(blockPrefixes, h.blockPrefixes);
  }

  @Override
  public int hashCode() {
    return key.hashCode() * 31 + java.util.Arrays.hashCode(blockPrefixes);
  }

  @Override
  public String toString() {
    return "ChunkFileHeader[key=%s, flags=%d, dataLength=%d, storedLength=%d, blockPrefixes=%d]"
        .formatted(key, flags, dataLength, storedLength, blockPrefixes.length / 2);
  }

  boolean lz4() {
    return (flags & FLAG_LZ4) != 0;
  }

  /** Bytes of the whole file: header block plus stored bytes padded to a block. */
  long fileBytes() {
    return BLOCK_BYTES + padded(storedLength);
  }

  static long padded(long n) {
    return (n + BLOCK_BYTES - 1) / BLOCK_BYTES * BLOCK_BYTES;
  }

  /** Writes this header into the first {@link #BLOCK_BYTES} of {@code block}, zeroing the rest. */
  void encode(MemorySegment block) {
    block.asSlice(0, BLOCK_BYTES).fill((byte) 0);
    block.set(INT, 0, MAGIC);
    block.set(INT, 4, VERSION);
    block.set(INT, 8, flags);
    block.set(LONG, 16, key.namespace());
    block.set(LONG, 24, key.h1());
    block.set(LONG, 32, key.h2());
    block.set(LONG, 40, dataLength);
    block.set(LONG, 48, storedLength);
    block.set(INT, 56, dataCrc);
    block.set(INT, 60, crc(block.asSlice(0, 60)));
    int n = blockPrefixes.length / 2;
    if (n > 0 && n <= MAX_PREFIXES) {
      for (int i = 0; i < 2 * n; i++) {
        block.set(LONG, PREFIXES_AT + 8L * i, blockPrefixes[i]);
      }
      block.set(INT, 64, n);
      block.set(INT, 68, crc(block.asSlice(PREFIXES_AT, 16L * n)));
    }
  }

  /**
   * Reads a header block.
   *
   * @throws CorruptChunkException if the magic, version, header checksum or lengths are wrong
   */
  static ChunkFileHeader decode(MemorySegment block) throws CorruptChunkException {
    if (block.get(INT, 0) != MAGIC) {
      throw new CorruptChunkException("bad magic");
    }
    if (block.get(INT, 60) != crc(block.asSlice(0, 60))) {
      throw new CorruptChunkException("header checksum mismatch");
    }
    int version = block.get(INT, 4);
    if (version != VERSION) {
      throw new CorruptChunkException("unsupported version " + version);
    }
    long dataLength = block.get(LONG, 40);
    long storedLength = block.get(LONG, 48);
    if (dataLength < 0 || storedLength < 0) {
      throw new CorruptChunkException("negative length");
    }
    ChunkKey key = new ChunkKey(block.get(LONG, 16), block.get(LONG, 24), block.get(LONG, 32));
    return new ChunkFileHeader(
        key, block.get(INT, 8), dataLength, storedLength, block.get(INT, 56), prefixes(block));
  }

  /** The block prefixes a header block lists; none when absent or when their checksum fails. */
  private static long[] prefixes(MemorySegment block) {
    int n = block.get(INT, 64);
    if (n <= 0
        || n > MAX_PREFIXES
        || block.get(INT, 68) != crc(block.asSlice(PREFIXES_AT, 16L * n))) {
      return NO_PREFIXES;
    }
    long[] out = new long[2 * n];
    for (int i = 0; i < out.length; i++) {
      out[i] = block.get(LONG, PREFIXES_AT + 8L * i);
    }
    return out;
  }

  private static final long[] NO_PREFIXES = new long[0];

  /** CRC32C of a segment's bytes. */
  static int crc(MemorySegment bytes) {
    CRC32C c = new CRC32C();
    long offset = 0;
    while (offset < bytes.byteSize()) {
      long n = Math.min(1L << 30, bytes.byteSize() - offset);
      c.update(bytes.asSlice(offset, n).asByteBuffer());
      offset += n;
    }
    return (int) c.getValue();
  }
}
