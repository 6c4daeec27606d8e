package io.kvtier.memory;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;
import java.util.zip.CRC32;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class HostMemoryTest {

  private static byte[] randomBytes(int n, long seed) {
    byte[] b = new byte[n];
    new Random(seed).nextBytes(b);
    return b;
  }

  @ParameterizedTest
  @ValueSource(ints = {0, 1, 7, 4096, 1 << 20, (5 << 20) + 3})
  void copy_anySize_copiesEveryByte(int n) {
    try (Arena arena = Arena.ofConfined()) {
      byte[] data = randomBytes(n, n);
      MemorySegment src = arena.allocate(Math.max(n, 1));
      MemorySegment dst = arena.allocate(Math.max(n, 1));
      MemorySegment.copy(data, 0, src, ValueLayout.JAVA_BYTE, 0, n);

      HostMemory.copy(src.address(), dst.address(), n);

      assertArrayEquals(data, dst.asSlice(0, n).toArray(ValueLayout.JAVA_BYTE));
    }
  }

  @ParameterizedTest
  @ValueSource(ints = {1, 2, 3, 8})
  void copyParallel_largeBuffer_copiesEveryByte(int threads) {
    int n = (37 << 20) + 11; // not a multiple of the slice alignment
    try (Arena arena = Arena.ofConfined()) {
      byte[] data = randomBytes(n, threads);
      MemorySegment src = arena.allocate(n);
      MemorySegment dst = arena.allocate(n);
      MemorySegment.copy(data, 0, src, ValueLayout.JAVA_BYTE, 0, n);

      HostMemory.copyParallel(src.address(), dst.address(), n, threads);

      assertArrayEquals(data, dst.toArray(ValueLayout.JAVA_BYTE));
    }
  }

  @Test
  void copyParallel_overlappingRanges_throws() {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment buf = arena.allocate(1 << 20);
      IllegalArgumentException e =
          assertThrows(
              IllegalArgumentException.class,
              () -> HostMemory.copyParallel(buf.address(), buf.address() + 100, 1000, 2));
      assertTrue(e.getMessage().contains("disjoint"), e.getMessage());
    }
  }

  @Test
  void crc32_matchesJdkCrc32OfSameBytes() {
    byte[] data = randomBytes(300_001, 42);
    CRC32 expected = new CRC32();
    expected.update(data);
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment seg = arena.allocate(data.length);
      MemorySegment.copy(data, 0, seg, ValueLayout.JAVA_BYTE, 0, data.length);
      assertEquals(expected.getValue(), HostMemory.crc32(seg.address(), data.length));
    }
  }

  @Test
  void fillPattern_writesDocumentedPattern() {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment seg = arena.allocate(1000);
      HostMemory.fillPattern(seg.address(), 1000, 5);
      for (int i = 0; i < 1000; i++) {
        assertEquals((byte) (i * 131 + 5), seg.get(ValueLayout.JAVA_BYTE, i), "byte " + i);
      }
    }
  }

  @Test
  void view_zeroAddress_throwsNamingArgument() {
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> HostMemory.copy(0, 1, 8));
    assertTrue(e.getMessage().contains("address"), e.getMessage());
  }

  @Test
  void view_negativeLength_throwsNamingValue() {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment seg = arena.allocate(8);
      IllegalArgumentException e =
          assertThrows(
              IllegalArgumentException.class,
              () -> HostMemory.copy(seg.address(), seg.address(), -1));
      assertTrue(e.getMessage().contains("byteCount") && e.getMessage().contains("-1"));
    }
  }

  @Test
  void copyParallel_zeroThreads_throws() {
    try (Arena arena = Arena.ofConfined()) {
      MemorySegment a = arena.allocate(8);
      MemorySegment b = arena.allocate(8);
      assertThrows(
          IllegalArgumentException.class,
          () -> HostMemory.copyParallel(a.address(), b.address(), 8, 0));
    }
  }
}
