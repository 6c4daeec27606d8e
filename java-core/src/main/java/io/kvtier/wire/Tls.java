package io.kvtier.wire;

import io.netty.handler.ssl.SslContext;
import io.netty.handler.ssl.SslContextBuilder;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.util.Collection;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

/**
 * TLS for kvtier's own protocol: the cache server's certificate and key, and what its clients trust
 * (a PEM file of CA certificates, or the JVM's default trust store). Clients check that the
 * certificate names the host they connect to (its subject alternative names), as HTTPS does.
 *
 * <p>Files are PEM: a certificate chain, and an unencrypted PKCS#8 private key ({@code -----BEGIN
 * PRIVATE KEY-----}, what {@code openssl req -newkey rsa:2048 -nodes} and {@code openssl genpkey}
 * write). Every failure to read them is an {@link IllegalArgumentException} that names the file.
 */
public final class Tls {
  private Tls() {}

  /**
   * The server side, from a certificate chain and its private key.
   *
   * @throws IllegalArgumentException if a file is missing or not usable, naming it and why
   */
  public static SslContext server(Path certificateChain, Path privateKey) {
    readable(certificateChain, "certificate");
    readable(privateKey, "private key");
    try {
      return SslContextBuilder.forServer(certificateChain.toFile(), privateKey.toFile()).build();
    } catch (IOException | IllegalArgumentException e) {
      throw new IllegalArgumentException(
          "cannot use certificate "
              + certificateChain
              + " with private key "
              + privateKey
              + " (PEM, an unencrypted PKCS#8 key): "
              + rootMessage(e),
          e);
    }
  }

  /**
   * What a client trusts: the certificates in {@code caPem}, or the JVM's default trust store when
   * it is null.
   *
   * @throws IllegalArgumentException if the file is missing, holds no certificate or cannot be read
   */
  public static TrustManagerFactory trust(Path caPem) {
    try {
      TrustManagerFactory tmf =
          TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
      if (caPem == null) {
        tmf.init((KeyStore) null);
        return tmf;
      }
      readable(caPem, "CA certificate");
      Collection<? extends Certificate> certs;
      try (InputStream in = Files.newInputStream(caPem)) {
        certs = CertificateFactory.getInstance("X.509").generateCertificates(in);
      }
      if (certs.isEmpty()) {
        throw new IllegalArgumentException("CA file " + caPem + " holds no PEM certificate");
      }
      KeyStore store = KeyStore.getInstance(KeyStore.getDefaultType());
      store.load(null, null);
      int i = 0;
      for (Certificate c : certs) {
        store.setCertificateEntry("ca-" + i++, c);
      }
      tmf.init(store);
      return tmf;
    } catch (IOException | GeneralSecurityException e) {
      throw new IllegalArgumentException(
          "cannot read CA certificates from " + caPem + ": " + rootMessage(e), e);
    }
  }

  /** The client side over Netty, trusting {@code trust} and checking the host name. */
  public static SslContext client(TrustManagerFactory trust) {
    try {
      return SslContextBuilder.forClient()
          .trustManager(trust)
          .endpointIdentificationAlgorithm("HTTPS")
          .build();
    } catch (IOException e) {
      throw new IllegalArgumentException("cannot set up TLS: " + rootMessage(e), e);
    }
  }

  /**
   * A blocking client socket over {@code plain} (connected), trusting {@code trust} and checking
   * that the certificate names {@code host}; the handshake runs on first use.
   */
  public static SSLSocket clientSocket(
      java.net.Socket plain, String host, int port, TrustManagerFactory trust) throws IOException {
    try {
      SSLContext ctx = SSLContext.getInstance("TLS");
      ctx.init(null, trust.getTrustManagers(), null);
      SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket(plain, host, port, true);
      SSLParameters p = s.getSSLParameters();
      p.setEndpointIdentificationAlgorithm("HTTPS");
      s.setSSLParameters(p);
      return s;
    } catch (GeneralSecurityException e) {
      throw new IOException("cannot set up TLS: " + rootMessage(e), e);
    }
  }

  private static void readable(Path file, String what) {
    if (!Files.isRegularFile(file)) {
      throw new IllegalArgumentException(what + " " + file + ": no such file");
    }
    if (!Files.isReadable(file)) {
      throw new IllegalArgumentException(what + " " + file + ": not readable");
    }
  }

  /** The innermost cause's message (TLS exceptions wrap the useful one several times). */
  public static String rootMessage(Throwable e) {
    Throwable t = e;
    while (t.getCause() != null && t.getCause() != t) {
      t = t.getCause();
    }
    String m = t.getMessage();
    return m == null ? t.getClass().getSimpleName() : m;
  }
}
