package io.kvtier.remote.redis;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.kvtier.testing.Await;
import java.io.File;
import java.io.IOException;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

/**
 * Real {@code redis-server} processes on loopback ports, started and stopped by tests. The programs
 * are looked up on {@code PATH}, as they are run; a test that needs them calls {@link
 * #assumeInstalled()} first and is skipped, with the reason, where they are missing.
 */
public final class RedisServers {
  private RedisServers() {}

  /** The programs the Redis tests run. */
  private static final List<String> PROGRAMS = List.of("redis-server", "redis-cli");

  /** Where {@code program} is on {@code PATH}, if it is there and executable. */
  static Optional<Path> onPath(String program) {
    String path = System.getenv("PATH");
    if (path == null) {
      return Optional.empty();
    }
    for (String dir : path.split(File.pathSeparator)) {
      if (dir.isEmpty()) {
        continue;
      }
      Path p = Path.of(dir, program);
      if (Files.isRegularFile(p) && Files.isExecutable(p)) {
        return Optional.of(p);
      }
    }
    return Optional.empty();
  }

  /** Whether {@code redis-server} and {@code redis-cli} are both on {@code PATH}. */
  public static boolean installed() {
    return PROGRAMS.stream().allMatch(p -> onPath(p).isPresent());
  }

  /** Skips the calling test (or class, from a {@code @BeforeAll}) unless {@link #installed()}. */
  public static void assumeInstalled() {
    List<String> missing = PROGRAMS.stream().filter(p -> onPath(p).isEmpty()).toList();
    assumeTrue(
        missing.isEmpty(),
        () ->
            String.join(" and ", missing)
                + " not found on PATH; Redis tests are skipped (apt-get install redis-server"
                + " provides both)");
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
    boolean started = false;
    try {
      Await.until(
          "redis-server on port " + port + " to answer",
          () -> {
            if (!p.isAlive()) {
              throw new IllegalStateException(
                  "redis-server on port " + port + " exited with " + p.exitValue());
            }
            return up.getAsBoolean();
          });
      started = true;
    } finally {
      if (!started) {
        p.destroyForcibly();
      }
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

  /**
   * Stops {@code p} with SIGSTOP and returns once the kernel reports it stopped: from then on the
   * server reads and answers nothing (connections still complete in the kernel's backlog) until
   * {@link #resume}. A stall that begins and ends when the test says, unlike {@code DEBUG SLEEP}.
   */
  public static void suspend(Process p) throws Exception {
    signal(p, "STOP");
    Await.until("redis-server " + p.pid() + " to stop", () -> state(p) == 'T');
  }

  /** Continues a process {@link #suspend}ed; returns once the kernel reports it running again. */
  public static void resume(Process p) throws Exception {
    signal(p, "CONT");
    Await.until("redis-server " + p.pid() + " to continue", () -> state(p) != 'T');
  }

  private static void signal(Process p, String signal) throws Exception {
    run("kill", "-" + signal, Long.toString(p.pid()));
  }

  /** The process state letter in {@code /proc/<pid>/stat} ('T' when stopped by a signal). */
  private static char state(Process p) throws IOException {
    String stat = Files.readString(Path.of("/proc", Long.toString(p.pid()), "stat"));
    return stat.charAt(stat.lastIndexOf(')') + 2); // "pid (comm) S ..."; comm may hold spaces
  }

  /** Stops a server started here (resuming it first if suspended); null is ignored. */
  public static void stop(Process p) throws InterruptedException {
    if (p == null) {
      return;
    }
    if (p.isAlive()) {
      try {
        signal(p, "CONT"); // a stopped process would not act on SIGTERM
      } catch (Exception e) {
        // it exited meanwhile; destroy below is then a no-op
      }
    }
    p.destroy();
    if (!p.waitFor(10, TimeUnit.SECONDS)) {
      p.destroyForcibly().waitFor();
    }
  }
}
