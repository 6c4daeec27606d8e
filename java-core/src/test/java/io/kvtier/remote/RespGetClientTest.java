package io.kvtier.remote;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.memory.ChunkBuffer;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
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
    listener.close();
    for (int i = 0; i < 200 && pool.inUseSlots() > 0; i++) {
      Thread.sleep(5);
    }
    assertEquals(0, pool.inUseSlots(), "a value buffer leaked");
    pool.close();
  }

  /** Serves one connection: reads whatever comes, then writes {@code reply} in pieces. */
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
                  Thread.sleep(2000);
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
    try (RespGetClient c =
        new RespGetClient("127.0.0.1", port, List.of(), 500, pool::tryAllocate)) {
      java.io.IOException e =
          assertThrows(java.io.IOException.class, () -> c.get(new byte[][] {ascii("a")}));
      assertTrue(e.getMessage().contains("127.0.0.1:" + port), e.getMessage());
    }
    listener = new ServerSocket(0); // for tearDown
  }
}
