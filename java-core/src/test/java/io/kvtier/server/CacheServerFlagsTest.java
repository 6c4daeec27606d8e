package io.kvtier.server;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** kvtier-server's flags: defaults, values, and one clear message for each bad one. */
class CacheServerFlagsTest {
  @TempDir Path dir;

  @Test
  void defaultsListenOnLoopbackOnly() throws Exception {
    CacheServer.Settings s = CacheServer.parse();
    assertEquals("127.0.0.1", s.bindHost(), "never on every interface unless asked");
    assertEquals(7070, s.port());
    assertEquals(4L << 30, s.memoryBytes());
    assertEquals(64L << 20, s.maxValueBytes());
    assertNull(s.diskPath());
    assertNull(s.secret());
    assertEquals(4, s.workerThreads());
  }

  @Test
  void valuesAreTaken() throws Exception {
    Path secret = dir.resolve("secret");
    Files.writeString(secret, "  s3cret\n");
    CacheServer.Settings s =
        CacheServer.parse(
            "--port",
            "7100",
            "--bind",
            "0.0.0.0",
            "--memory-gb",
            "0.5",
            "--max-value-mb",
            "4",
            "--disk",
            dir.toString(),
            "--disk-gb",
            "2",
            "--secret-file",
            secret.toString(),
            "--workers",
            "8");
    assertEquals(7100, s.port());
    assertEquals("0.0.0.0", s.bindHost());
    assertEquals(1L << 29, s.memoryBytes());
    assertEquals(4L << 20, s.maxValueBytes());
    assertEquals(dir, s.diskPath());
    assertEquals(2L << 30, s.diskBytes());
    assertArrayEquals("s3cret".getBytes(StandardCharsets.UTF_8), s.secret());
    assertEquals(8, s.workerThreads());
  }

  @ParameterizedTest
  @CsvSource(
      delimiter = '|',
      value = {
        "--port|seventy|--port takes a whole number from 0 to 65535, got 'seventy'",
        "--port|70000|--port takes a whole number from 0 to 65535, got '70000'",
        "--memory-gb|-1|--memory-gb takes a positive number of GB, got '-1'",
        "--memory-gb|lots|--memory-gb takes a positive number of GB, got 'lots'",
        "--disk-gb|0|--disk-gb takes a positive number of GB, got '0'",
        "--max-value-mb|0|--max-value-mb takes a whole number from 1 to 1048576, got '0'",
        "--workers|1.5|--workers takes a whole number from 1 to 1024, got '1.5'",
        "--colour|blue|unknown flag --colour",
        "--secret-file|/nonexistent/secret|--secret-file /nonexistent/secret: no such file",
        "--tls-cert|/nonexistent/cert.pem|--tls-cert /nonexistent/cert.pem: no such file",
        "--tls-key|/nonexistent/key.pem|--tls-key /nonexistent/key.pem: no such file",
        "--stats-port|-1|--stats-port takes a whole number from 0 to 65535, got '-1'",
      })
  void aBadFlagIsOneClearMessage(String flag, String value, String message) {
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> CacheServer.parse(flag, value));
    assertEquals(message, e.getMessage());
  }

  @Test
  void tlsTakesACertificateAndItsKeyTogether(@TempDir Path dir) throws Exception {
    Path cert = Files.writeString(dir.resolve("cert.pem"), "x");
    IllegalArgumentException e =
        assertThrows(
            IllegalArgumentException.class, () -> CacheServer.parse("--tls-cert", cert.toString()));
    assertEquals(
        "TLS needs both a certificate (--tls-cert) and its private key (--tls-key)",
        e.getMessage());
    CacheServer.Settings s =
        CacheServer.parse(
            "--tls-cert", cert.toString(), "--tls-key", cert.toString(), "--stats-port", "9470");
    assertEquals(cert, s.tlsCertificate());
    assertEquals(9470, s.statsPort());
    assertEquals(CacheServer.Settings.NO_STATS, CacheServer.parse().statsPort());
  }

  @Test
  void aFlagWithoutItsValueAndHelp() {
    assertEquals(
        "--port needs a value",
        assertThrows(IllegalArgumentException.class, () -> CacheServer.parse("--port"))
            .getMessage());
    assertThrows(CacheServer.Help.class, () -> CacheServer.parse("--help"));
    assertThrows(CacheServer.Help.class, () -> CacheServer.parse("--port", "1", "-h"));
  }
}
