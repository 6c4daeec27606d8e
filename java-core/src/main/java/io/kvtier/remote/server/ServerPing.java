package io.kvtier.remote.server;

import io.kvtier.config.Redaction;
import io.kvtier.store.RemoteTierProvider.PingException;
import io.kvtier.wire.Protocol;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.URI;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * {@code kvtier ping} for {@code kvtier://[:secret@]host:port}: the handshake the tier makes (HELLO
 * with the shared secret), then round trips of an {@code EXISTS} of one key no chunk has.
 */
final class ServerPing {
  private ServerPing() {}

  static long[] ping(String url, long timeoutMillis, int rounds) throws PingException {
    URI uri;
    try {
      uri = URI.create(url);
    } catch (IllegalArgumentException e) {
      throw new PingException("not a valid URL: " + Redaction.text(e.getMessage(), url));
    }
    if (uri.getHost() == null || uri.getPort() < 0) {
      throw new PingException("not of the form kvtier://[:secret@]host:port");
    }
    String info = uri.getUserInfo();
    byte[] secret =
        (info == null ? "" : info.substring(info.indexOf(':') + 1))
            .getBytes(StandardCharsets.UTF_8);
    String where = uri.getHost() + ":" + uri.getPort();
    try (Socket s = new Socket()) {
      s.connect(new InetSocketAddress(uri.getHost(), uri.getPort()), (int) timeoutMillis);
      s.setSoTimeout((int) timeoutMillis);
      s.setTcpNoDelay(true);
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
      throw new PingException(where + " closed the connection (not a kvtier cache server?)");
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
