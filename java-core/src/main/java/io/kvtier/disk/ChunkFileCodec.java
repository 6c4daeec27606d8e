package io.kvtier.disk;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import java.io.EOFException;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.List;
import java.util.function.LongFunction;
import net.jpountz.lz4.LZ4Compressor;
import net.jpountz.lz4.LZ4Exception;
import net.jpountz.lz4.LZ4Factory;
import net.jpountz.lz4.LZ4FastDecompressor;

/**
 * The chunk file format, both ways: a chunk to the bytes of its file (a {@link ChunkFileHeader}
 * block, the chunk's bytes, optionally LZ4-compressed, CRC32C-checked and zero-padded to 4 KiB),
 * and a file back to a chunk, every byte verified. No index, no threads, no error counting: a file
 * that does not check out is a {@link CorruptChunkException}, whatever is wrong with it (header,
 * data, length, a file cut short).
 *
 * <pre>
 *   file:   | header block (4096) | stored bytes | zero padding to a multiple of 4096 |
 *   stored: the chunk's bytes, or their LZ4 block if that is at most {@link #LZ4_KEEP_RATIO} of them
 * </pre>
 *
 * <p>Thread-safe. Each thread encodes and reads through its own page-aligned scratch segments
 * (header blocks, compressed data), allocated from an arena the codec owns and grown on demand; the
 * segments of an {@link Encoded} are valid on the encoding thread until its next {@link #encode}.
 * {@link #close} frees the scratch: call it only once no thread uses the codec any more.
 */
final class ChunkFileCodec implements AutoCloseable {
  /** A compressed chunk is kept only if it is at most this fraction of the raw size. */
  static final double LZ4_KEEP_RATIO = 0.95;

  /** A chunk ready to be written: its header, then {@link #parts()} in order make the file. */
  record Encoded(ChunkFileHeader header, MemorySegment headerBlock, MemorySegment payload) {
    /** Bytes of the file: the header block plus the padded payload. */
    long fileBytes() {
      return header.fileBytes();
    }

    /** The file's bytes: header block, then the padded payload; block-aligned for O_DIRECT. */
    List<MemorySegment> parts() {
      return List.of(headerBlock, payload);
    }
  }

  /** One thread's scratch segments; each grows as needed. */
  private static final class Scratch {
    MemorySegment headerOut;
    MemorySegment headerIn;
    MemorySegment compressed; // encode: LZ4 output
    MemorySegment stored; // read: LZ4 input read from the file
  }

  private final boolean lz4;
  private final boolean direct;
  private final LZ4Compressor compressor;
  private final LZ4FastDecompressor decompressor;
  private final Arena arena = Arena.ofShared();
  private final ThreadLocal<Scratch> scratch = ThreadLocal.withInitial(Scratch::new);

  /**
   * A codec that compresses with LZ4 when {@code lz4} (reading handles both forms either way) and
   * reads with O_DIRECT when {@code direct}.
   */
  ChunkFileCodec(boolean lz4, boolean direct) {
    this.lz4 = lz4;
    this.direct = direct;
    LZ4Factory factory = LZ4Factory.fastestInstance();
    this.compressor = factory.fastCompressor();
    this.decompressor = factory.fastDecompressor();
  }

  /**
   * Encodes {@code chunk} as the file of {@code key}: compresses it into scratch if that is enabled
   * and worth it, checksums the stored bytes and zeroes the padding after them (in {@code chunk}'s
   * padded slot when stored raw: no other bytes ever reach the disk). Does not block; touches no
   * file.
   *
   * @return the file's parts, valid on this thread until its next call; {@code chunk} must stay
   *     retained until they are written
   */
  Encoded encode(ChunkKey key, ChunkBuffer chunk) {
    Scratch s = scratch.get();
    long dataLength = chunk.length();
    MemorySegment stored = chunk.segment();
    MemorySegment padded = chunk.paddedSegment();
    int flags = 0;
    if (lz4) {
      int maxLength = compressor.maxCompressedLength((int) dataLength);
      s.compressed = grow(s.compressed, maxLength);
      int n =
          compressor.compress(
              chunk.segment().asByteBuffer(),
              0,
              (int) dataLength,
              s.compressed.asByteBuffer(),
              0,
              (int) s.compressed.byteSize());
      if (n <= dataLength * LZ4_KEEP_RATIO) {
        stored = s.compressed.asSlice(0, n);
        padded = s.compressed;
        flags = ChunkFileHeader.FLAG_LZ4;
      }
    }
    ChunkFileHeader h =
        new ChunkFileHeader(
            key,
            flags,
            dataLength,
            stored.byteSize(),
            ChunkFileHeader.crc(stored),
            chunk.blockPrefixes());
    MemorySegment payload = padded.asSlice(0, ChunkFileHeader.padded(stored.byteSize()));
    payload.asSlice(stored.byteSize()).fill((byte) 0); // padding: never leak other bytes to disk
    s.headerOut = grow(s.headerOut, ChunkFileHeader.BLOCK_BYTES);
    MemorySegment block = s.headerOut.asSlice(0, ChunkFileHeader.BLOCK_BYTES);
    h.encode(block);
    return new Encoded(h, block, payload);
  }

  /**
   * Reads and checks {@code file}'s header block and that the file is as long as the header says
   * (what start-up needs to index a file without reading its data). Blocks on I/O.
   *
   * @throws CorruptChunkException if the header does not check out, the file is shorter than a
   *     header block, or its length differs from the header's
   * @throws java.nio.file.NoSuchFileException if the file is gone
   * @throws IOException if reading fails
   */
  ChunkFileHeader readHeader(DiskIo io, Path file) throws IOException {
    ChunkFileHeader h = header(io, file);
    long size = io.size(file);
    if (size != h.fileBytes()) {
      throw new CorruptChunkException("is " + size + " bytes, its header says " + h.fileBytes());
    }
    return h;
  }

  /**
   * Reads the chunk of {@code key} from {@code file} into a buffer from {@code buffers}, checking
   * the header, that it names {@code key} and {@code dataLength}, the data's checksum and (when
   * compressed) that it decompresses to exactly {@code dataLength} bytes. Blocks on I/O.
   *
   * @param buffers gives a buffer of the asked length, or null when none is free
   * @return the chunk in a buffer the caller owns, or null if {@code buffers} gave none
   * @throws CorruptChunkException if anything does not check out, including a file cut short
   * @throws java.nio.file.NoSuchFileException if the file is gone
   * @throws IOException if reading fails
   */
  ChunkBuffer read(
      DiskIo io, Path file, ChunkKey key, long dataLength, LongFunction<ChunkBuffer> buffers)
      throws IOException {
    ChunkFileHeader h = header(io, file);
    if (!h.key().equals(key) || h.dataLength() != dataLength) {
      throw new CorruptChunkException("header does not match the index");
    }
    if (!h.lz4() && h.storedLength() != h.dataLength()) {
      throw new CorruptChunkException(
          "raw data of " + h.storedLength() + " bytes, expected " + dataLength);
    }
    ChunkBuffer b = buffers.apply(h.dataLength());
    if (b == null) {
      return null;
    }
    boolean ok = false;
    try {
      long paddedLength = ChunkFileHeader.padded(h.storedLength());
      if (h.lz4()) {
        Scratch s = scratch.get();
        s.stored = grow(s.stored, paddedLength);
        readFully(io, file, ChunkFileHeader.BLOCK_BYTES, s.stored.asSlice(0, paddedLength));
        MemorySegment stored = s.stored.asSlice(0, h.storedLength());
        checkCrc(h, stored);
        decompress(h, stored, b);
      } else {
        MemorySegment into = direct ? b.paddedSegment().asSlice(0, paddedLength) : b.segment();
        readFully(io, file, ChunkFileHeader.BLOCK_BYTES, into);
        checkCrc(h, b.segment());
      }
      b.setBlockPrefixes(h.blockPrefixes());
      ok = true;
      return b;
    } finally {
      if (!ok) {
        b.release();
      }
    }
  }

  /**
   * Checks every byte of {@code file} without keeping its chunk: the header, the file's length, the
   * data's checksum and (when compressed) that it decompresses to the header's length. Blocks on
   * I/O; uses this thread's scratch.
   *
   * @return the file's header
   * @throws CorruptChunkException if anything does not check out
   * @throws IOException if reading fails
   */
  ChunkFileHeader verify(DiskIo io, Path file) throws IOException {
    ChunkFileHeader h = readHeader(io, file);
    if (!h.lz4() && h.storedLength() != h.dataLength()) {
      throw new CorruptChunkException(
          "raw data of " + h.storedLength() + " bytes, expected " + h.dataLength());
    }
    Scratch s = scratch.get();
    long paddedLength = ChunkFileHeader.padded(h.storedLength());
    s.stored = grow(s.stored, paddedLength);
    readFully(io, file, ChunkFileHeader.BLOCK_BYTES, s.stored.asSlice(0, paddedLength));
    MemorySegment stored = s.stored.asSlice(0, h.storedLength());
    checkCrc(h, stored);
    if (h.lz4()) {
      s.compressed = grow(s.compressed, h.dataLength());
      int read;
      try {
        read =
            decompressor.decompress(
                stored.asByteBuffer(), 0, s.compressed.asByteBuffer(), 0, (int) h.dataLength());
      } catch (LZ4Exception e) {
        throw new CorruptChunkException("LZ4 data does not decompress: " + e.getMessage(), e);
      }
      if (read != h.storedLength()) {
        throw new CorruptChunkException("LZ4 data length mismatch");
      }
    }
    return h;
  }

  private ChunkFileHeader header(DiskIo io, Path file) throws IOException {
    Scratch s = scratch.get();
    s.headerIn = grow(s.headerIn, ChunkFileHeader.BLOCK_BYTES);
    MemorySegment block = s.headerIn.asSlice(0, ChunkFileHeader.BLOCK_BYTES);
    readFully(io, file, 0, block);
    return ChunkFileHeader.decode(block);
  }

  /** Reads {@code into} at {@code offset}; a file that ends first is corrupt, not an I/O error. */
  private void readFully(DiskIo io, Path file, long offset, MemorySegment into) throws IOException {
    try {
      io.read(file, offset, into, direct);
    } catch (EOFException e) {
      throw new CorruptChunkException("truncated: " + e.getMessage(), e);
    }
  }

  private void decompress(ChunkFileHeader h, MemorySegment stored, ChunkBuffer into)
      throws CorruptChunkException {
    int read;
    try {
      read =
          decompressor.decompress(
              stored.asByteBuffer(), 0, into.segment().asByteBuffer(), 0, (int) h.dataLength());
    } catch (LZ4Exception e) {
      throw new CorruptChunkException("LZ4 data does not decompress: " + e.getMessage(), e);
    }
    if (read != h.storedLength()) {
      throw new CorruptChunkException("LZ4 data length mismatch");
    }
  }

  private static void checkCrc(ChunkFileHeader h, MemorySegment stored)
      throws CorruptChunkException {
    if (ChunkFileHeader.crc(stored) != h.dataCrc()) {
      throw new CorruptChunkException("data checksum mismatch");
    }
  }

  /** {@code current} if it holds {@code bytes}, else a new page-aligned segment that does. */
  private MemorySegment grow(MemorySegment current, long bytes) {
    long need = ChunkFileHeader.padded(Math.max(1, bytes));
    if (current != null && current.byteSize() >= need) {
      return current;
    }
    return arena.allocate(need, ChunkFileHeader.BLOCK_BYTES);
  }

  /** Frees every thread's scratch. Call only once no thread encodes or reads any more. */
  @Override
  public void close() {
    arena.close();
  }
}
