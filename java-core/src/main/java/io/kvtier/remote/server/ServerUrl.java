package io.kvtier.remote.server;

import io.kvtier.config.Redaction;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * A cache server's address as {@code remote_url} gives it: {@code kvtier://[:secret@]host:port}, or
 * {@code kvtiers://[:secret@]host:port[?ca=/path/ca.pem]} for TLS (trusting the certificates in
 * {@code ca}, else the JVM's trust store).
 *
 * @param secret the shared secret's bytes (empty: none)
 * @param ca the PEM file of CA certificates a TLS client trusts; null: the JVM's default
 */
record ServerUrl(String host, int port, byte[] secret, boolean tls, Path ca) {
  static final String FORM =
      "kvtier://[:secret@]host:port or kvtiers://[:secret@]host:port[?ca=FILE]";

  /**
   * Parses {@code url}.
   *
   * @throws IllegalArgumentException saying what is wrong, without the secret
   */
  static ServerUrl parse(String url) {
    URI uri;
    try {
      uri = URI.create(url);
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException(
          Redaction.url(url) + " is malformed: " + Redaction.text(e.getMessage(), url));
    }
    String scheme = uri.getScheme();
    boolean tls = "kvtiers".equals(scheme);
    if (!(tls || "kvtier".equals(scheme)) || uri.getHost() == null || uri.getPort() < 0) {
      throw new IllegalArgumentException(Redaction.url(url) + " is not of the form " + FORM);
    }
    Path ca = null;
    String query = uri.getQuery();
    if (query != null) {
      for (String pair : query.split("&")) {
        if (pair.startsWith("ca=") && tls && pair.length() > 3) {
          ca = Path.of(pair.substring(3));
        } else {
          throw new IllegalArgumentException(
              Redaction.url(url)
                  + ": unknown parameter '"
                  + Redaction.text(pair)
                  + "' (kvtiers:// takes ?ca=FILE; kvtier:// none)");
        }
      }
    }
    String info = uri.getUserInfo();
    String s = info == null ? "" : info.substring(info.indexOf(':') + 1);
    return new ServerUrl(uri.getHost(), uri.getPort(), s.getBytes(StandardCharsets.UTF_8), tls, ca);
  }

  @Override
  public String toString() {
    return (tls ? "kvtiers://" : "kvtier://") + host + ":" + port;
  }
}
