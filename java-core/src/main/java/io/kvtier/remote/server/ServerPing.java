package io.kvtier.remote.server;

import io.kvtier.store.RemoteTierProvider.PingException;
import io.kvtier.wire.Protocol;
import io.kvtier.wire.Tls;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

/**
 * {@code kvtier ping} for {@code kvtier://[:secret@]host:port} and {@code kvtiers://...}: the
 * handshake the tier makes (TLS for {@code kvtiers}, then HELLO with the shared secret), then round
 * trips of an {@code EXISTS} of one key no chunk has.
 */
final class ServerPing {
  private ServerPing() {}

  static long[] ping(String url, long timeoutMillis, int rounds) throws PingException {
    ServerUrl u;
    try {
      u = ServerUrl.parse(url);
    } catch (IllegalArgumentException e) {
      throw new PingException(e.getMessage());
    }
    TrustManagerFactory trust;
    try {
      trust = u.tls() ? Tls.trust(u.ca()) : null;
    } catch (IllegalArgumentException e) {
      throw new PingException(e.getMessage());
    }
    byte[] secret = u.secret();
    String where = u.host() + ":" + u.port();
    try (Socket plain = new Socket()) {
      plain.connect(new InetSocketAddress(u.host(), u.port()), (int) timeoutMillis);
      plain.setSoTimeout((int) timeoutMillis);
      plain.setTcpNoDelay(true);
      Socket s = trust == null ? plain : Tls.clientSocket(plain, u.host(), u.port(), trust);
      if (s instanceof SSLSocket ssl) {
        try {
          ssl.startHandshake();
        } catch (SSLException e) {
          throw new PingException("TLS handshake with " + where + " failed: " + Tls.rootMessage(e));
        }
      }
      OutputStream out = s.getOutputStream();
      DataInputStream in = new DataInputStream(s.getInputStream());
      ByteBuffer hello = frame(Protocol.HELLO, 1, 8 + secret.length);
      hello.putInt(Protocol.MAGIC).putShort((short) Protocol.VERSION);
      hello.putShort((short) secret.length).put(secret);
      out.write(hello.array());
      ByteBuffer reply = read(in);
      byte op = reply.get();
      reply.getInt();
      if (op == Protocol.ERROR) {
        short code = reply.getShort();
        byte[] msg = new byte[reply.getShort() & 0xFFFF];
        reply.get(msg);
        String text = new String(msg, StandardCharsets.UTF_8);
        throw new PingException(
            (code == Protocol.ERR_AUTH ? "authentication failed: " : "the server refused: ")
                + text);
      }
      if (op != Protocol.HELLO_OK) {
        throw new PingException(where + " is not a kvtier cache server (op " + op + ")");
      }
      long[] out2 = new long[rounds];
      for (int i = 0; i < rounds; i++) {
        ByteBuffer exists = frame(Protocol.EXISTS, 2 + i, 2 + Protocol.KEY_BYTES);
        exists.putShort((short) 1).put(new byte[Protocol.KEY_BYTES]);
        long t0 = System.nanoTime();
        out.write(exists.array());
        ByteBuffer r = read(in);
        out2[i] = System.nanoTime() - t0;
        if (r.get() != Protocol.EXISTS_N) {
          throw new PingException(where + " answered EXISTS with something else");
        }
      }
      return out2;
    } catch (SocketTimeoutException e) {
      throw new PingException("no answer from " + where + " within " + timeoutMillis + " ms");
    } catch (EOFException e) {
      throw new PingException(
          where
              + " closed the connection (not a kvtier cache server?"
              + (u.tls() ? " or one without TLS?)" : " or one that wants TLS, kvtiers://?)"));
    } catch (IOException e) {
      throw new PingException("cannot connect to " + where + ": " + e.getMessage());
    }
  }

  private static ByteBuffer frame(byte op, int id, int payload) {
    ByteBuffer b =
        ByteBuffer.allocate(Protocol.HEADER_BYTES + payload).order(ByteOrder.LITTLE_ENDIAN);
    b.putInt(payload + 5).put(op).putInt(id);
    return b;
  }

  private static ByteBuffer read(DataInputStream in) throws IOException, PingException {
    byte[] len = new byte[4];
    in.readFully(len);
    int n = ByteBuffer.wrap(len).order(ByteOrder.LITTLE_ENDIAN).getInt();
    if (n < 5 || n > Protocol.MAX_CONTROL_FRAME) {
      throw new PingException("not a kvtier cache server's reply (a frame of " + n + " bytes)");
    }
    byte[] body = new byte[n];
    in.readFully(body);
    return ByteBuffer.wrap(body).order(ByteOrder.LITTLE_ENDIAN);
  }
}
