package io.kvtier.store;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
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
import java.lang.foreign.ValueLayout;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The behaviour every {@link KvStore} keeps. A tier's test extends this class and says how to make
 * one; the store under test holds at least {@link #CAPACITY_CHUNKS} chunks of {@link #CHUNK_BYTES}.
 */
public abstract class KvStoreContract {
  protected static final int CHUNK_BYTES = 64 * 1024;
  protected static final int CAPACITY_CHUNKS = 16;

  /** Buffers the tests put come from here: a pool distinct from any the store owns. */
  protected ChunkPool callerPool;

  protected KvStore store;

  /** Returns a new, empty store holding at least {@link #CAPACITY_CHUNKS} chunks. */
  protected abstract KvStore newStore();

  /**
   * Called after the store is closed: everything the test made must be released. Also called when
   * {@link #newStore()} failed or was skipped, so it must cope with what was never made.
   */
  protected void assertNothingHeld() {}

  @BeforeEach
  void open() {
    callerPool = new ChunkPool(MmapAllocator.INSTANCE, CHUNK_BYTES, 64L * CHUNK_BYTES, 1 << 20);
    store = newStore();
  }

  @AfterEach
  void closeAll() {
    if (store != null) {
      store.close();
    }
    if (callerPool != null) {
      assertEquals(0, callerPool.inUseSlots(), "a caller buffer was not released by the store");
      callerPool.close();
    }
    assertNothingHeld();
  }

  protected static ChunkKey key(int i) {
    return new ChunkKey(42, i, ~i);
  }

  /** A caller-owned buffer of {@code length} bytes filled from {@code seed}. */
  protected ChunkBuffer chunk(long seed, int length) {
    ChunkBuffer b = callerPool.tryAllocate(length);
    byte[] bytes = new byte[length];
    new Random(seed).nextBytes(bytes);
    java.lang.foreign.MemorySegment.copy(bytes, 0, b.segment(), ValueLayout.JAVA_BYTE, 0, length);
    return b;
  }

  protected static byte[] bytesOf(ChunkBuffer b) {
    return b.segment().toArray(ValueLayout.JAVA_BYTE);
  }

  /** Whether this tier returns true from put without knowing if the key exists (remote). */
  protected boolean sendsPutsBlind() {
    return false;
  }

  /**
   * Whether filling the store with {@code 4 * CAPACITY_CHUNKS} chunks evicts some (a remote server
   * with room to spare does not).
   */
  protected boolean evictsWhenFilled() {
    return true;
  }

  /** Waits until the store's asynchronous writes are done ({@link KvStore#awaitIdle}). */
  protected void awaitIdle() throws InterruptedException {
    assertTrue(store.awaitIdle(AWAIT_MILLIS), "the store's background writes did not finish");
  }

  /** How long {@link #awaitIdle()} waits before failing the test, in milliseconds. */
  protected static final long AWAIT_MILLIS = 60_000;

  /** Puts, waits for the store's background writes, and checks the chunk is visible. */
  protected void putAndAwait(ChunkKey k, ChunkBuffer b) throws InterruptedException {
    assertTrue(store.put(k, b));
    awaitIdle();
    assertTrue(store.contains(k), "a put chunk is visible once the store is idle");
  }

  @Test
  void get_afterPut_returnsSameBytes() throws Exception {
    ChunkBuffer b = chunk(1, CHUNK_BYTES);
    byte[] expected = bytesOf(b);
    putAndAwait(key(1), b);
    b.release();
    ChunkBuffer got = store.get(key(1));
    assertNotNull(got);
    assertArrayEquals(expected, bytesOf(got));
    got.release();
  }

  @Test
  void get_shorterThanSlot_keepsLength() throws Exception {
    ChunkBuffer b = chunk(2, 1000);
    putAndAwait(key(2), b);
    ChunkBuffer got = store.get(key(2));
    assertEquals(1000, got.length());
    assertArrayEquals(bytesOf(b), bytesOf(got));
    got.release();
    b.release();
  }

  @Test
  void get_missingKey_returnsNullAndCountsMiss() throws Exception {
    long before = store.stats().misses();
    assertNull(store.get(key(99)));
    assertEquals(before + 1, store.stats().misses(), "one get, one miss");
  }

  @Test
  void put_existingKey_isNoOp() throws Exception {
    ChunkBuffer a = chunk(3, CHUNK_BYTES);
    ChunkBuffer b = chunk(4, CHUNK_BYTES);
    putAndAwait(key(3), a);
    long duplicatesBefore = store.stats().duplicatePuts();
    boolean sent = store.put(key(3), b);
    awaitIdle(); // a remote tier sends the write and the server ignores it: let it land
    if (!sendsPutsBlind()) {
      assertFalse(sent, "a local tier must report the duplicate");
    }
    assertEquals(duplicatesBefore + 1, store.stats().duplicatePuts(), "the duplicate is counted");
    ChunkBuffer got = store.get(key(3));
    assertArrayEquals(bytesOf(a), bytesOf(got));
    got.release();
    a.release();
    b.release();
  }

  @Test
  void put_doesNotTakeCallersReference() throws Exception {
    ChunkBuffer b = chunk(5, CHUNK_BYTES);
    byte[] expected = bytesOf(b);
    assertTrue(store.put(key(5), b));
    assertTrue(b.refCnt() >= 1, "put released the caller's reference");
    awaitIdle();
    assertEquals(1, b.refCnt(), "an idle store holds no reference to the caller's buffer");
    assertTrue(b.release(), "the caller's release is the last one");
    ChunkBuffer got = store.get(key(5));
    assertNotNull(got, "the chunk outlives the caller's buffer");
    assertArrayEquals(expected, bytesOf(got));
    got.release();
  }

  @Test
  void callerMayOverwriteItsBufferAfterPut() throws Exception {
    ChunkBuffer b = chunk(6, CHUNK_BYTES);
    byte[] expected = bytesOf(b);
    putAndAwait(key(6), b); // the store has copied the bytes or written them out
    b.segment().fill((byte) 0);
    ChunkBuffer got = store.get(key(6));
    assertNotNull(got);
    assertArrayEquals(expected, bytesOf(got), "the caller's later writes must not reach the store");
    got.release();
    b.release();
  }

  @Test
  void prefixLength_stopsAtFirstMiss() throws Exception {
    for (int i : new int[] {10, 11, 13}) {
      ChunkBuffer b = chunk(i, CHUNK_BYTES);
      putAndAwait(key(i), b);
      b.release();
    }
    assertEquals(2, store.prefixLength(new ChunkKey[] {key(10), key(11), key(12), key(13)}));
    assertEquals(0, store.prefixLength(new ChunkKey[] {key(12), key(10)}));
  }

  @Test
  void remove_makesKeyInvisible_butReaderKeepsBytes() throws Exception {
    ChunkBuffer b = chunk(7, CHUNK_BYTES);
    byte[] expected = bytesOf(b);
    putAndAwait(key(7), b);
    b.release();
    ChunkBuffer reader = store.get(key(7));
    assertTrue(store.remove(key(7)));
    assertFalse(store.contains(key(7)));
    assertFalse(store.remove(key(7)));
    assertArrayEquals(expected, bytesOf(reader), "a reader's bytes survive removal");
    reader.release();
  }

  @Test
  void pin_absentKey_returnsFalse_andUnpinOfAbsentIsIgnored() {
    assertFalse(store.pin(key(55)));
    store.unpin(key(55));
  }

  @Test
  void pinnedChunk_survivesFillingTheStore() throws Exception {
    ChunkBuffer b = chunk(8, CHUNK_BYTES);
    putAndAwait(key(8), b);
    b.release();
    assertTrue(store.pin(key(8)));
    ChunkKey[] fill = new ChunkKey[4 * CAPACITY_CHUNKS];
    for (int i = 0; i < fill.length; i++) {
      fill[i] = key(100 + i);
      ChunkBuffer f = chunk(100 + i, CHUNK_BYTES);
      store.put(fill[i], f);
      f.release();
    }
    awaitIdle(); // the filling writes have landed (and evicted what they had to)
    assertTrue(store.contains(key(8)), "a pinned chunk must not be evicted");
    if (evictsWhenFilled()) {
      long kept = java.util.Arrays.stream(fill).filter(store::contains).count();
      assertTrue(kept < fill.length, "filling must evict something, else the pin proves nothing");
    }
    store.unpin(key(8));
  }

  @Test
  void fillingBeyondCapacity_neverFails_andKeepsBytesCorrect() throws Exception {
    for (int i = 0; i < 4 * CAPACITY_CHUNKS; i++) {
      ChunkBuffer f = chunk(1000 + i, CHUNK_BYTES);
      store.put(key(1000 + i), f);
      f.release();
    }
    awaitIdle();
    int present = 0;
    for (int i = 0; i < 4 * CAPACITY_CHUNKS; i++) {
      ChunkBuffer got = store.get(key(1000 + i));
      if (got != null) {
        present++;
        ChunkBuffer expected = chunk(1000 + i, CHUNK_BYTES);
        assertArrayEquals(bytesOf(expected), bytesOf(got), "chunk " + i);
        expected.release();
        got.release();
      }
    }
    assertTrue(present > 0, "something must remain");
  }

  @Test
  void methods_afterClose_throw() {
    store.close();
    store.close(); // idempotent
    assertThrows(IllegalStateException.class, () -> store.contains(key(1)));
    assertThrows(IllegalStateException.class, () -> store.get(key(1)));
    ChunkBuffer b = chunk(9, 10);
    assertThrows(IllegalStateException.class, () -> store.put(key(1), b));
    b.release();
    assertDoesNotThrow(store::stats, "stats stays readable after close");
  }
}
