package io.kvtier.remote.redis;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.testing.Await;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.foreign.ValueLayout;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The RESP reply reader against a scripted peer: replies cut at every byte, nil and error replies,
 * bytes that are not RESP, and a connection that drops in the middle of a value.
 */
class RespGetClientTest {
  static final int VALUE = 200_000; // long enough for reads straight into the value's buffer

  ChunkPool pool;
  ServerSocket listener;

  @BeforeEach
  void setUp() throws Exception {
    pool = new ChunkPool(MmapAllocator.INSTANCE, VALUE, 8L * VALUE, 1 << 21);
    listener = new ServerSocket(0);
  }

  @AfterEach
  void tearDown() throws Exception {
    if (listener != null) {
      listener.close();
    }
    // The clients are closed; a failure may still be releasing a value's buffer on its event loop.
    Await.until(
        "value buffers to be released",
        () -> pool.inUseSlots() == 0,
        () -> "a value buffer leaked: " + pool.inUseSlots() + " in use");
    pool.close();
  }

  /**
   * Serves one connection: reads whatever comes, then writes {@code reply} in pieces, then closes
   * it, or with {@code closeAfter} false keeps it open until the client closes it.
   */
  void serve(byte[] reply, int piece, boolean closeAfter) {
    Thread t =
        new Thread(
            () -> {
              try (Socket s = listener.accept()) {
                InputStream in = s.getInputStream();
                in.read(new byte[4096]); // the GETs
                OutputStream out = s.getOutputStream();
                for (int i = 0; i < reply.length; i += piece) {
                  out.write(reply, i, Math.min(piece, reply.length - i));
                  out.flush();
                }
                if (!closeAfter) {
                  in.transferTo(OutputStream.nullOutputStream()); // until the client closes
                }
              } catch (Exception e) {
                // the client closed first
              }
            });
    t.setDaemon(true);
    t.start();
  }

  RespGetClient client() {
    return new RespGetClient(
        "127.0.0.1", listener.getLocalPort(), List.of(), 2000, pool::tryAllocate);
  }

  static byte[] concat(byte[]... parts) {
    int n = 0;
    for (byte[] p : parts) {
      n += p.length;
    }
    byte[] out = new byte[n];
    int at = 0;
    for (byte[] p : parts) {
      System.arraycopy(p, 0, out, at, p.length);
      at += p.length;
    }
    return out;
  }

  static byte[] ascii(String s) {
    return s.getBytes(StandardCharsets.US_ASCII);
  }

  static Throwable failure(CompletableFuture<ChunkBuffer> f) {
    ExecutionException e = assertThrows(ExecutionException.class, () -> f.get(5, TimeUnit.SECONDS));
    return e.getCause();
  }

  @Test
  void repliesCutAnywhere_decodeToTheSameValues_nilAndErrorsInPlace() throws Exception {
    byte[] value = new byte[VALUE];
    new Random(1).nextBytes(value);
    byte[] reply =
        concat(
            ascii("$" + VALUE + "\r\n"),
            value,
            ascii("\r\n$-1\r\n-ERR wrong kind of value\r\n$3\r\nabc\r\n"));
    for (int piece : new int[] {1, 7, 65_536, reply.length}) {
      serve(reply, piece, false);
      try (RespGetClient c = client()) {
        var f = c.get(new byte[][] {ascii("a"), ascii("b"), ascii("c"), ascii("d")});
        ChunkBuffer v = f.get(0).get(10, TimeUnit.SECONDS);
        assertArrayEquals(value, v.segment().toArray(ValueLayout.JAVA_BYTE), "piece " + piece);
        v.release();
        assertNull(f.get(1).get(5, TimeUnit.SECONDS));
        assertTrue(failure(f.get(2)).getMessage().contains("server error: ERR wrong kind"));
        ChunkBuffer small = f.get(3).get(5, TimeUnit.SECONDS);
        assertEquals("abc", new String(small.segment().toArray(ValueLayout.JAVA_BYTE)));
        small.release();
      }
    }
  }

  @Test
  void bytesThatAreNotResp_failThePendingGets() throws Exception {
    serve(ascii("HTTP/1.1 400 Bad Request\r\n\r\n"), 100, false);
    try (RespGetClient c = client()) {
      var f = c.get(new byte[][] {ascii("a"), ascii("b")});
      Throwable first = failure(f.get(0));
      assertInstanceOf(java.io.IOException.class, first);
      assertTrue(first.getMessage().contains("not a RESP reply: HTTP/1.1"), first.getMessage());
      assertInstanceOf(java.io.IOException.class, failure(f.get(1)));
    }
  }

  @Test
  void aConnectionLostInsideAValue_failsIt_andReleasesItsBuffer() throws Exception {
    byte[] part = new byte[VALUE / 2];
    serve(concat(ascii("$" + VALUE + "\r\n"), part), 4096, true);
    try (RespGetClient c = client()) {
      var f = c.get(new byte[][] {ascii("a")});
      assertTrue(failure(f.get(0)).getMessage().contains("closed"));
    }
  }

  @Test
  void noServer_isAnIoErrorNamingTheAddress() throws Exception {
    int port = listener.getLocalPort();
    listener.close();
    listener = null;
    try (RespGetClient c =
        new RespGetClient("127.0.0.1", port, List.of(), 500, pool::tryAllocate)) {
      java.io.IOException e =
          assertThrows(java.io.IOException.class, () -> c.get(new byte[][] {ascii("a")}));
      assertTrue(e.getMessage().contains("127.0.0.1:" + port), e.getMessage());
    }
  }

  /**
   * A slow failed attempt (here the address takes 200 ms of the client's clock to find, as a
   * sentinel that times out) is not repeated by every GET until the retry interval; a refused one
   * is retried at once.
   */
  @Test
  void afterASlowFailedConnect_getsFailAtOnce_untilTheRetryInterval() throws Exception {
    int port = listener.getLocalPort();
    listener.close();
    listener = null;
    AtomicLong clock = new AtomicLong(); // the client's nanosecond clock, moved by the test
    AtomicInteger attempts = new AtomicInteger();
    AtomicBoolean slow = new AtomicBoolean();
    try (RespGetClient c =
        new RespGetClient(
            () -> {
              attempts.incrementAndGet();
              if (slow.get()) {
                clock.addAndGet(TimeUnit.MILLISECONDS.toNanos(200));
              }
              return java.net.InetSocketAddress.createUnresolved("127.0.0.1", port);
            },
            List.of(),
            500,
            pool::tryAllocate,
            null,
            clock::get)) {
      byte[][] keys = {ascii("a")};
      assertThrows(java.io.IOException.class, () -> c.get(keys));
      assertThrows(java.io.IOException.class, () -> c.get(keys));
      assertEquals(2, attempts.get(), "a refused connection is tried again by the next GET");

      slow.set(true);
      assertThrows(java.io.IOException.class, () -> c.get(keys));
      assertEquals(3, attempts.get());
      clock.addAndGet(RespGetClient.RETRY_NANOS - 1);
      java.io.IOException again = assertThrows(java.io.IOException.class, () -> c.get(keys));
      assertEquals(3, attempts.get(), "within the retry interval a GET fails without connecting");
      assertTrue(again.getMessage().contains("last attempt"), again.getMessage());
      assertTrue(again.getMessage().contains("127.0.0.1:" + port), again.getMessage());
      clock.addAndGet(1);
      assertThrows(java.io.IOException.class, () -> c.get(keys));
      assertEquals(4, attempts.get(), "after the interval a GET tries again");
    }
  }
}
