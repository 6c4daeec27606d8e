package io.kvtier.remote.server;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.config.KvTierConfig;
import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import io.kvtier.store.ErrorKind;
import io.kvtier.store.KvStore;
import io.kvtier.store.TieredStore;
import io.kvtier.store.Tiers;
import io.kvtier.testing.Await;
import io.kvtier.wire.Protocol;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.OutputStream;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * A cache server that stopped answering (SIGSTOP: the kernel keeps its connection open) costs the
 * remote tier one timeout, then is not asked while the breaker is open.
 */
class FrozenServerTest {
  /** Answers HELLO, then reads every request and answers none; counts them. */
  static final class Frozen implements AutoCloseable {
    final ServerSocket socket = new ServerSocket(0);
    final AtomicInteger requests = new AtomicInteger();
    final AtomicBoolean connectionEnded = new AtomicBoolean();
    final AtomicBoolean helloAnswered = new AtomicBoolean();
    volatile long helloDelayMillis;
    final Thread thread =
        new Thread(
            () -> {
              try (Socket s = socket.accept()) {
                DataInputStream in = new DataInputStream(s.getInputStream());
                OutputStream out = s.getOutputStream();
                while (true) {
                  byte[] len = new byte[4];
                  in.readFully(len);
                  int n = ByteBuffer.wrap(len).order(ByteOrder.LITTLE_ENDIAN).getInt();
                  byte[] body = new byte[n];
                  in.readFully(body);
                  ByteBuffer b = ByteBuffer.wrap(body).order(ByteOrder.LITTLE_ENDIAN);
                  byte op = b.get();
                  int id = b.getInt();
                  if (op == Protocol.HELLO) {
                    Thread.sleep(helloDelayMillis);
                    ByteBuffer ok = ByteBuffer.allocate(11).order(ByteOrder.LITTLE_ENDIAN);
                    ok.putInt(7).put(Protocol.HELLO_OK).putInt(id).putShort((short) 2);
                    out.write(ok.array());
                    out.flush();
                    helloAnswered.set(true);
                  } else {
                    requests.incrementAndGet();
                  }
                }
              } catch (EOFException e) {
                connectionEnded.set(true);
              } catch (IOException | InterruptedException e) {
                connectionEnded.set(true);
              }
            },
            "frozen-server");

    Frozen() throws IOException {
      this(0);
    }

    /** A server that answers HELLO only after {@code helloDelayMillis}. */
    Frozen(long helloDelayMillis) throws IOException {
      this.helloDelayMillis = helloDelayMillis; // before the thread starts
      thread.setDaemon(true);
      thread.start();
    }

    @Override
    public void close() throws IOException {
      socket.close();
    }
  }

  @Test
  void aHandshakeSlowerThanTheRequestTimeout_connects_andCountsNoError() throws Exception {
    // A cold client or a server that has just started: its first HELLO takes longer than a
    // request may, and is no fault of the remote store.
    try (Frozen slow = new Frozen(700);
        ServerStore remote =
            new ServerStore(
                "kvtier://127.0.0.1:" + slow.socket.getLocalPort(), 200, 4, 4096, n -> null)) {
      Await.until("the HELLO answered after 700 ms", slow.helloAnswered::get);
      Await.until("the connection up", remote::connected);
      assertEquals(Map.of(), remote.stats().errors(), "nothing to count");
      assertTrue(!slow.connectionEnded.get(), "the client kept the connection");
    }
  }

  @Test
  void aFrozenServer_costsOneTimeout_thenIsLeftAlone() throws Exception {
    try (Frozen frozen = new Frozen();
        ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, 4096, 1 << 20, 1 << 20)) {
      KvTierConfig config =
          KvTierConfig.of(
              Map.of(
                  "remote_url",
                  "kvtier://127.0.0.1:" + frozen.socket.getLocalPort(),
                  "remote_timeout_ms",
                  200,
                  "chunk_size",
                  16));
      ChunkKey[] keys = {new ChunkKey(1, 2, 3), new ChunkKey(1, 4, 5)};
      KvStore remote;
      try (TieredStore store = Tiers.open(config, pool, 0, true)) {
        remote = store.lowerTiers().get(0);
        for (int i = 0; i < 20; i++) {
          assertEquals(0, remote.prefixLength(keys), "a miss");
          assertEquals(0, (int) remote.prefixLengthAsync(keys).get());
        }
        assertEquals(1L, remote.stats().errors().get(ErrorKind.TIMEOUT), "one timeout");
        assertEquals(39L, remote.stats().errors().get(ErrorKind.SKIPPED));
      }
      Await.until("the client to hang up", frozen.connectionEnded::get);
      assertEquals(1, frozen.requests.get(), "the frozen server was asked once, not 40 times");
      assertTrue(frozen.thread.isAlive() || frozen.connectionEnded.get());
    }
  }
}
