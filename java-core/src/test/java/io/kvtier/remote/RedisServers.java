package io.kvtier.remote;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

/** Real {@code redis-server} processes on loopback ports, started and stopped by tests. */
public final class RedisServers {
  private RedisServers() {}

  public static void assumeInstalled() {
    assumeTrue(
        Files.isExecutable(Path.of("/usr/bin/redis-server"))
            || Files.isExecutable(Path.of("/usr/local/bin/redis-server")),
        "redis-server is not installed (.ci/run installs it: apt-get install redis-server)");
  }

  public static int freePort() throws IOException {
    try (ServerSocket s = new ServerSocket(0)) {
      return s.getLocalPort();
    }
  }

  /** Starts redis-server on {@code port} with {@code extra} arguments; waits until it answers. */
  public static Process start(int port, Path dir, String... extra) throws Exception {
    return launch(port, dir, List.of("--port", Integer.toString(port)), extra, () -> ping(port));
  }

  /** Starts a TLS-only redis-server on {@code tlsPort} (plain port disabled). */
  public static Process startTls(int tlsPort, Path dir, String... tlsArgs) throws Exception {
    return launch(
        tlsPort,
        dir,
        List.of("--port", "0", "--tls-port", Integer.toString(tlsPort)),
        tlsArgs,
        () -> accepts(tlsPort));
  }

  private static Process launch(
      int port, Path dir, List<String> ports, String[] extra, BooleanSupplier up) throws Exception {
    List<String> cmd = new ArrayList<>(List.of("redis-server"));
    cmd.addAll(ports);
    cmd.addAll(
        List.of(
            "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir.toString()));
    cmd.addAll(List.of(extra));
    Process p =
        new ProcessBuilder(cmd)
            .redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.DISCARD)
            .start();
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
    while (!up.getAsBoolean()) {
      if (System.nanoTime() > deadline || !p.isAlive()) {
        p.destroyForcibly();
        throw new IllegalStateException("redis-server on port " + port + " did not start");
      }
      Thread.sleep(20);
    }
    return p;
  }

  /** Whether something accepts TCP connections on {@code port} (a TLS port cannot be PINGed). */
  private static boolean accepts(int port) {
    try (Socket s = new Socket("127.0.0.1", port)) {
      return s.isConnected();
    } catch (IOException e) {
      return false;
    }
  }

  public static boolean ping(int port) {
    try (Socket s = new Socket("127.0.0.1", port)) {
      s.setSoTimeout(1000);
      s.getOutputStream().write("PING\r\n".getBytes(StandardCharsets.US_ASCII));
      byte[] buf = new byte[7];
      int n = s.getInputStream().read(buf);
      return n > 0 && new String(buf, 0, n, StandardCharsets.US_ASCII).startsWith("+PONG");
    } catch (IOException e) {
      return false;
    }
  }

  /** Runs a command (redis-cli) and returns its output; fails on a non-zero exit. */
  public static String run(String... cmd) throws Exception {
    Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
      throw new IllegalStateException(String.join(" ", cmd) + " failed: " + out);
    }
    return out;
  }

  public static void stop(Process p) throws InterruptedException {
    if (p != null) {
      p.destroy();
      if (!p.waitFor(10, TimeUnit.SECONDS)) {
        p.destroyForcibly().waitFor();
      }
    }
  }
}
