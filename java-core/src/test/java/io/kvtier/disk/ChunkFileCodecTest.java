package io.kvtier.disk;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import java.io.RandomAccessFile;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The chunk file format alone: encode, write with the real {@link NioDiskIo}, read back; every kind
 * of damage is a {@link CorruptChunkException}. Raw and LZ4, buffered and O_DIRECT.
 */
class ChunkFileCodecTest {
  static final int CHUNK = 64 * 1024;
  static final ChunkKey KEY = new ChunkKey(7, 11, 13);

  @TempDir Path dir;
  ChunkPool pool;
  ChunkFileCodec codec;
  final DiskIo io = NioDiskIo.INSTANCE;

  @BeforeEach
  void setUp() {
    pool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK, 16L * CHUNK, 1 << 20);
  }

  @AfterEach
  void tearDown() {
    if (codec != null) {
      codec.close();
    }
    assertEquals(0, pool.inUseSlots(), "leaked buffers");
    pool.close();
  }

  /** Bytes that LZ4 shrinks a lot (bf16-like values) or not at all (random). */
  static byte[] content(boolean compressible, int length) {
    byte[] b = new byte[length];
    if (compressible) {
      for (int i = 0; i < length; i++) {
        b[i] = (byte) (i % 2 == 0 ? 0x80 + i / 2 % 7 : 0x3F);
      }
    } else {
      new Random(length).nextBytes(b);
    }
    return b;
  }

  ChunkBuffer buffer(byte[] bytes) {
    ChunkBuffer b = pool.tryAllocate(bytes.length);
    MemorySegment.copy(bytes, 0, b.segment(), ValueLayout.JAVA_BYTE, 0, bytes.length);
    return b;
  }

  /** Encodes {@code bytes} as KEY's file at {@code file}; returns the header written. */
  ChunkFileHeader write(Path file, byte[] bytes, boolean direct) throws Exception {
    ChunkBuffer b = buffer(bytes);
    try {
      ChunkFileCodec.Encoded e = codec.encode(KEY, b);
      io.writeAtomically(file, e.parts(), direct);
      return e.header();
    } finally {
      b.release();
    }
  }

  ChunkBuffer read(Path file, long dataLength) throws Exception {
    return codec.read(io, file, KEY, dataLength, pool::tryAllocate);
  }

  static void flipByte(Path file, long at) throws Exception {
    try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
      raf.seek(at);
      int b = raf.read();
      raf.seek(at);
      raf.write(b ^ 0x01);
    }
  }

  static void truncate(Path file, long length) throws Exception {
    try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
      raf.setLength(length);
    }
  }

  @ParameterizedTest(name = "lz4={0} compressible={1} direct={2} length={3}")
  @CsvSource({
    "false, false, false, 65536",
    "false, true, false, 65536",
    "true, true, false, 65536",
    "true, false, false, 65536",
    "true, true, true, 65536",
    "false, false, true, 4097",
    "true, true, true, 5000",
    "false, false, false, 1",
    "true, true, false, 0"
  })
  void encodeThenRead_roundTripsByteForByte(
      boolean lz4, boolean compressible, boolean direct, int length) throws Exception {
    codec = new ChunkFileCodec(lz4, direct);
    byte[] bytes = content(compressible, length);
    Path file = dir.resolve("c.kvc");
    ChunkFileHeader h = write(file, bytes, direct);

    boolean compressed = lz4 && compressible && length > 0;
    assertEquals(compressed, h.lz4(), "compressed only when enabled and worth it");
    assertEquals(length, h.dataLength());
    assertEquals(h.fileBytes(), Files.size(file));
    assertEquals(0, Files.size(file) % ChunkFileHeader.BLOCK_BYTES, "whole blocks for O_DIRECT");

    byte[] onDisk = Files.readAllBytes(file);
    byte[] stored =
        Arrays.copyOfRange(
            onDisk,
            ChunkFileHeader.BLOCK_BYTES,
            ChunkFileHeader.BLOCK_BYTES + (int) h.storedLength());
    if (!compressed) {
      assertArrayEquals(bytes, stored, "raw chunks are stored as they are");
    }
    for (int i = ChunkFileHeader.BLOCK_BYTES + (int) h.storedLength(); i < onDisk.length; i++) {
      assertEquals(0, onDisk[i], "padding is zero at " + i);
    }

    ChunkBuffer got = read(file, length);
    assertNotNull(got);
    assertArrayEquals(bytes, got.segment().toArray(ValueLayout.JAVA_BYTE));
    got.release();
    assertEquals(h, codec.readHeader(io, file));
  }

  @Test
  void blockPrefixes_roundTripThroughTheHeader_andABadListReadsAsNone() throws Exception {
    codec = new ChunkFileCodec(false, false);
    byte[] bytes = content(false, CHUNK);
    long[] prefixes = {1, 2, 3, 4, -5, -6};
    Path file = dir.resolve("c.kvc");
    ChunkBuffer b = buffer(bytes);
    try {
      b.setBlockPrefixes(prefixes);
      ChunkFileCodec.Encoded e = codec.encode(KEY, b);
      io.writeAtomically(file, e.parts(), false);
    } finally {
      b.release();
    }
    assertArrayEquals(prefixes, codec.readHeader(io, file).blockPrefixes());
    ChunkBuffer got = read(file, CHUNK);
    assertArrayEquals(prefixes, got.blockPrefixes(), "a chunk read back knows its prefixes");
    got.release();
    flipByte(file, 72 + 9); // inside the list: the chunk is still served, without prefixes
    assertEquals(0, codec.readHeader(io, file).blockPrefixes().length);
    got = read(file, CHUNK);
    assertArrayEquals(bytes, got.segment().toArray(ValueLayout.JAVA_BYTE));
    got.release();
  }

  @ParameterizedTest(name = "direct={0}")
  @ValueSource(booleans = {false, true})
  void read_compressedFile_withLz4Disabled_stillDecodes(boolean direct) throws Exception {
    byte[] bytes = content(true, CHUNK);
    Path file = dir.resolve("c.kvc");
    codec = new ChunkFileCodec(true, direct);
    assertTrue(write(file, bytes, direct).lz4());
    codec.close();
    codec = new ChunkFileCodec(false, direct);
    ChunkBuffer got = read(file, CHUNK);
    assertArrayEquals(bytes, got.segment().toArray(ValueLayout.JAVA_BYTE));
    got.release();
  }

  @ParameterizedTest(name = "lz4={0}")
  @ValueSource(booleans = {false, true})
  void flippedHeaderByte_isCorrupt(boolean lz4) throws Exception {
    codec = new ChunkFileCodec(lz4, false);
    Path file = dir.resolve("c.kvc");
    write(file, content(true, CHUNK), false);
    flipByte(file, 30); // inside the key: the header checksum no longer matches
    CorruptChunkException e = assertThrows(CorruptChunkException.class, () -> read(file, CHUNK));
    assertTrue(e.getMessage().contains("header checksum"), e.getMessage());
    assertThrows(CorruptChunkException.class, () -> codec.readHeader(io, file));
  }

  @ParameterizedTest(name = "lz4={0}")
  @ValueSource(booleans = {false, true})
  void badMagic_isCorrupt(boolean lz4) throws Exception {
    codec = new ChunkFileCodec(lz4, false);
    Path file = dir.resolve("c.kvc");
    write(file, content(true, CHUNK), false);
    flipByte(file, 0);
    CorruptChunkException e = assertThrows(CorruptChunkException.class, () -> read(file, CHUNK));
    assertTrue(e.getMessage().contains("magic"), e.getMessage());
  }

  @ParameterizedTest(name = "lz4={0}")
  @ValueSource(booleans = {false, true})
  void flippedDataByte_isCorrupt_andNoBufferIsLeaked(boolean lz4) throws Exception {
    codec = new ChunkFileCodec(lz4, false);
    Path file = dir.resolve("c.kvc");
    ChunkFileHeader h = write(file, content(true, CHUNK), false);
    assertEquals(lz4, h.lz4());
    flipByte(file, ChunkFileHeader.BLOCK_BYTES + h.storedLength() / 2);
    CorruptChunkException e = assertThrows(CorruptChunkException.class, () -> read(file, CHUNK));
    assertTrue(e.getMessage().contains("data checksum"), e.getMessage());
    // tearDown checks that the buffer taken for the read went back
  }

  @ParameterizedTest(name = "lz4={0} keep={1}")
  @CsvSource({"false, 4196", "true, 4196", "false, 100", "true, 100", "false, 0"})
  void truncatedFile_isCorrupt(boolean lz4, long keep) throws Exception {
    codec = new ChunkFileCodec(lz4, false);
    Path file = dir.resolve("c.kvc");
    write(file, content(true, CHUNK), false);
    truncate(file, keep); // in the data, or inside the header block
    CorruptChunkException e = assertThrows(CorruptChunkException.class, () -> read(file, CHUNK));
    assertTrue(e.getMessage().contains("truncated"), e.getMessage());
    assertThrows(CorruptChunkException.class, () -> codec.readHeader(io, file));
  }

  @ParameterizedTest(name = "lz4={0}")
  @ValueSource(booleans = {false, true})
  void readHeader_fileLongerThanItsHeaderSays_isCorrupt(boolean lz4) throws Exception {
    codec = new ChunkFileCodec(lz4, false);
    Path file = dir.resolve("c.kvc");
    ChunkFileHeader h = write(file, content(true, CHUNK), false);
    truncate(file, h.fileBytes() + ChunkFileHeader.BLOCK_BYTES);
    CorruptChunkException e =
        assertThrows(CorruptChunkException.class, () -> codec.readHeader(io, file));
    assertTrue(e.getMessage().contains("its header says"), e.getMessage());
  }

  @ParameterizedTest(name = "lz4={0}")
  @ValueSource(booleans = {false, true})
  void read_otherKeyOrLength_isCorrupt(boolean lz4) throws Exception {
    codec = new ChunkFileCodec(lz4, false);
    Path file = dir.resolve("c.kvc");
    write(file, content(true, CHUNK), false);
    assertThrows(
        CorruptChunkException.class,
        () -> codec.read(io, file, new ChunkKey(7, 11, 14), CHUNK, pool::tryAllocate));
    assertThrows(CorruptChunkException.class, () -> read(file, CHUNK - 1));
  }

  @ParameterizedTest(name = "lz4={0}")
  @ValueSource(booleans = {false, true})
  void read_noFreeBuffer_isNull(boolean lz4) throws Exception {
    codec = new ChunkFileCodec(lz4, false);
    Path file = dir.resolve("c.kvc");
    write(file, content(true, CHUNK), false);
    assertNull(codec.read(io, file, KEY, CHUNK, n -> null));
  }

  @ParameterizedTest(name = "lz4={0}")
  @ValueSource(booleans = {false, true})
  void read_missingFile_isNoSuchFile_notCorrupt(boolean lz4) {
    codec = new ChunkFileCodec(lz4, false);
    Path file = dir.resolve("gone.kvc");
    assertFalse(Files.exists(file));
    assertThrows(java.nio.file.NoSuchFileException.class, () -> read(file, CHUNK));
  }
}
