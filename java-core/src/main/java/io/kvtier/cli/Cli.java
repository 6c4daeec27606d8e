package io.kvtier.cli;

import io.kvtier.config.ConfigException;
import io.kvtier.config.KvTierConfig;
import io.kvtier.config.Redaction;
import io.kvtier.disk.DiskInspector;
import io.kvtier.server.CacheServer;
import io.kvtier.store.RemoteTierProvider;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * The {@code kvtier} command: looks at and empties disk caches, checks a configuration, runs the
 * cache server. The Python package's {@code kvtier} script runs it on the JDK kvtier brings.
 *
 * <p>Exit status: {@value #OK} done (nothing wrong found); {@value #PROBLEMS} it ran and found
 * something wrong (bad files); {@value #USAGE} bad arguments or bad input (an unknown command, a
 * configuration that does not load, a directory that does not exist); {@value #FAILED} it could not
 * do its work (an I/O error).
 */
public final class Cli {
  static final int OK = 0;
  static final int PROBLEMS = 1;
  static final int USAGE = 2;
  static final int FAILED = 3;

  private static final String HELP =
      """
      usage: kvtier <command> ...

      commands:
        disk stats DIR                      what a disk tier's directory holds, by namespace
        disk verify DIR [--delete]          checks every file's header and checksum
        disk clear DIR [--namespace ID]     deletes the chunk files (of one namespace)
        config check [FILE]                 loads a configuration and prints every setting
        ping URL [--timeout-ms N]           reaches a remote store as the remote tier would
        server [FLAGS]                      runs the cache server (as kvtier-server)

      'kvtier <command> --help' says more. Exit status: 0 done, 1 problems found,
      2 bad arguments or input, 3 the command failed.
      """;

  private static final String DISK_STATS =
      """
      usage: kvtier disk stats DIR

      Counts the chunk files under DIR (a disk tier's directory, as local_disk names it) by key
      namespace (one per model, dtype and layout) with their size and the oldest and newest
      file's time, and the partial files of interrupted writes. Reads no file's contents.
      """;

  private static final String DISK_VERIFY =
      """
      usage: kvtier disk verify DIR [--delete]

      Reads every chunk file under DIR whole and checks its header, its length, its data's
      CRC32C, that LZ4 data decompresses, and that it lies where its key puts it. Prints each
      file that does not check out and why; --delete deletes them (a running engine treats a
      deleted file as a miss). Exit status 1 when any file did not check out.
      """;

  private static final String DISK_CLEAR =
      """
      usage: kvtier disk clear DIR [--namespace ID]

      Deletes the chunk files under DIR, or only those of namespace ID (the 16 hex digits that
      'kvtier disk stats' prints), and the partial files of interrupted writes. Files that are
      not kvtier's and the directories stay.
      """;

  private static final String CONFIG_CHECK =
      """
      usage: kvtier config check [FILE]

      Loads kvtier's configuration as vLLM's connector would: FILE (or KVTIER_CONFIG_FILE), then
      the KVTIER_<KEY> variables; prints every setting with its value and where it came from,
      secrets masked. Exit status 2 with the reason when it does not load.
      """;

  private static final String PING =
      """
      usage: kvtier ping URL [--timeout-ms N]

      Connects to the remote store at URL (a remote_url: redis://, rediss://, redis-sentinel://,
      redis-cluster://, kvtier://, kvtiers://) with its credentials and TLS, as kvtier's remote
      tier would, and makes 5 round trips, each bounded by N ms (default 1000). Says what failed:
      the address, the certificate, the password, a timeout; exit status 1 when it cannot reach
      the store. The password is never printed.
      """;

  private final PrintStream out;
  private final PrintStream err;

  Cli(PrintStream out, PrintStream err) {
    this.out = out;
    this.err = err;
  }

  public static void main(String[] args) throws Exception {
    if (args.length > 0 && args[0].equals("server")) {
      CacheServer.main(Arrays.copyOfRange(args, 1, args.length));
      return;
    }
    System.exit(new Cli(System.out, System.err).run(args));
  }

  /** Runs one command; returns its exit status. */
  int run(String... args) {
    List<String> a = List.of(args);
    if (a.isEmpty() || a.getFirst().equals("--help") || a.getFirst().equals("-h")) {
      return help(HELP, a.isEmpty() ? USAGE : OK);
    }
    try {
      return switch (a.getFirst()) {
        case "disk" -> disk(a.subList(1, a.size()));
        case "config" -> config(a.subList(1, a.size()));
        case "ping" -> ping(a.subList(1, a.size()));
        default -> usage("unknown command '" + a.getFirst() + "'", HELP);
      };
    } catch (NoSuchFileException e) {
      err.println(
          "kvtier: " + e.getFile() + ": " + (e.getReason() != null ? e.getReason() : "not found"));
      return USAGE;
    } catch (IOException e) {
      err.println("kvtier: " + e);
      return FAILED;
    }
  }

  private int disk(List<String> a) throws IOException {
    if (a.isEmpty()) {
      return usage("disk needs a command: stats, verify or clear", HELP);
    }
    String help =
        switch (a.getFirst()) {
          case "stats" -> DISK_STATS;
          case "verify" -> DISK_VERIFY;
          case "clear" -> DISK_CLEAR;
          default -> null;
        };
    if (help == null) {
      return usage("unknown disk command '" + a.getFirst() + "'", HELP);
    }
    List<String> rest = a.subList(1, a.size());
    if (rest.contains("--help") || rest.contains("-h")) {
      return help(help, OK);
    }
    List<String> positional = new ArrayList<>();
    boolean delete = false;
    String namespace = null;
    for (int i = 0; i < rest.size(); i++) {
      String x = rest.get(i);
      if (x.equals("--delete") && a.getFirst().equals("verify")) {
        delete = true;
      } else if (x.equals("--namespace") && a.getFirst().equals("clear")) {
        if (i + 1 >= rest.size()) {
          return usage("--namespace needs a value", help);
        }
        namespace = rest.get(++i).toLowerCase(Locale.ROOT);
      } else if (x.startsWith("-")) {
        return usage("unknown flag " + x, help);
      } else {
        positional.add(x);
      }
    }
    if (positional.size() != 1) {
      return usage("one directory expected", help);
    }
    Path dir = Path.of(positional.getFirst());
    return switch (a.getFirst()) {
      case "stats" -> stats(dir);
      case "verify" -> verify(dir, delete);
      default -> clear(dir, namespace);
    };
  }

  private int stats(Path dir) throws IOException {
    DiskInspector.Summary s = DiskInspector.summarize(dir);
    out.printf(
        Locale.ROOT,
        "%s: %d chunk files, %s, in %d namespace%s%n",
        dir,
        s.chunks(),
        bytes(s.bytes()),
        s.namespaces().size(),
        s.namespaces().size() == 1 ? "" : "s");
    for (DiskInspector.Namespace n : s.namespaces()) {
      out.printf(
          Locale.ROOT,
          "  namespace %s: %d chunks, %s, oldest %s, newest %s%n",
          n.id(),
          n.chunks(),
          bytes(n.bytes()),
          Instant.ofEpochMilli(n.oldestMillis()),
          Instant.ofEpochMilli(n.newestMillis()));
    }
    out.printf(
        Locale.ROOT,
        "  partial files of interrupted writes: %d (%s)%n",
        s.partialFiles(),
        bytes(s.partialBytes()));
    if (!s.foreign().isEmpty()) {
      out.printf(
          Locale.ROOT,
          "  other files, not kvtier's: %d, e.g. %s%n",
          s.foreign().size(),
          s.foreign().getFirst());
    }
    return OK;
  }

  private int verify(Path dir, boolean delete) throws IOException {
    long[] last = {0};
    List<DiskInspector.Problem> problems =
        DiskInspector.verify(
            dir,
            delete,
            n -> {
              last[0] = n;
              if (n % 1000 == 0) {
                err.printf(Locale.ROOT, "kvtier: %d files checked%n", n);
              }
            });
    for (DiskInspector.Problem p : problems) {
      out.printf(Locale.ROOT, "bad: %s: %s%s%n", p.file(), p.reason(), delete ? " (deleted)" : "");
    }
    out.printf(
        Locale.ROOT,
        "%s: %d files checked, %d did not check out%s%n",
        dir,
        last[0],
        problems.size(),
        problems.isEmpty() || delete ? "" : " (--delete deletes them)");
    return problems.isEmpty() ? OK : PROBLEMS;
  }

  private int clear(Path dir, String namespace) throws IOException {
    if (namespace != null && !namespace.matches("[0-9a-f]{16}")) {
      return usage(
          "a namespace is 16 hex digits, as 'kvtier disk stats' prints it: " + namespace,
          DISK_CLEAR);
    }
    long[] deleted = DiskInspector.clear(dir, namespace);
    out.printf(
        Locale.ROOT,
        "%s: deleted %d files, %s%s%n",
        dir,
        deleted[0],
        bytes(deleted[1]),
        namespace == null ? "" : " of namespace " + namespace);
    return OK;
  }

  private int config(List<String> a) {
    if (a.isEmpty() || !a.getFirst().equals("check")) {
      return usage("config needs a command: check", HELP);
    }
    List<String> rest = a.subList(1, a.size());
    if (rest.contains("--help") || rest.contains("-h")) {
      return help(CONFIG_CHECK, OK);
    }
    if (rest.size() > 1 || (!rest.isEmpty() && rest.getFirst().startsWith("-"))) {
      return usage("at most one file expected", CONFIG_CHECK);
    }
    KvTierConfig config;
    try {
      config = KvTierConfig.loadWithFile(rest.isEmpty() ? null : Path.of(rest.getFirst()));
    } catch (ConfigException e) {
      err.println("kvtier: the configuration does not load: " + e.getMessage());
      return USAGE;
    }
    out.println(config.describe());
    out.println("configuration OK");
    return OK;
  }

  private int ping(List<String> a) {
    if (a.contains("--help") || a.contains("-h")) {
      return help(PING, OK);
    }
    String url = null;
    long timeout = 1000;
    for (int i = 0; i < a.size(); i++) {
      String x = a.get(i);
      if (x.equals("--timeout-ms")) {
        if (i + 1 >= a.size() || !a.get(i + 1).matches("[0-9]{1,7}") || a.get(i + 1).equals("0")) {
          return usage("--timeout-ms takes a whole number of milliseconds from 1 to 9999999", PING);
        }
        timeout = Long.parseLong(a.get(++i));
      } else if (x.startsWith("-") || url != null) {
        return usage("unexpected argument " + Redaction.text(x, x), PING);
      } else {
        url = x;
      }
    }
    if (url == null) {
      return usage("ping needs a URL", PING);
    }
    String shown = Redaction.url(url);
    final String target = url;
    RemoteTierProvider provider =
        RemoteTierProvider.all().stream().filter(p -> p.accepts(target)).findFirst().orElse(null);
    if (provider == null) {
      return usage(
          shown
              + " has an unknown scheme; allowed: redis://, rediss://, redis-sentinel://,"
              + " redis-cluster://, rediss-cluster://, kvtier://, kvtiers://",
          PING);
    }
    long[] rtt;
    try {
      rtt = provider.ping(url, timeout, 5);
    } catch (RemoteTierProvider.PingException e) {
      err.println("kvtier: ping " + shown + ": " + e.getMessage());
      return PROBLEMS;
    }
    long[] sorted = rtt.clone();
    Arrays.sort(sorted);
    out.printf(
        Locale.ROOT,
        "%s answered: %d round trips, min %.3f ms, median %.3f ms, max %.3f ms%n",
        shown,
        sorted.length,
        sorted[0] / 1e6,
        sorted[sorted.length / 2] / 1e6,
        sorted[sorted.length - 1] / 1e6);
    return OK;
  }

  private int help(String text, int status) {
    (status == OK ? out : err).print(text);
    return status;
  }

  private int usage(String problem, String help) {
    err.println("kvtier: " + problem);
    err.print(help);
    return USAGE;
  }

  static String bytes(long n) {
    if (n < 1 << 20) {
      return String.format(Locale.ROOT, "%.1f KiB", n / 1024.0);
    }
    if (n < 1L << 30) {
      return String.format(Locale.ROOT, "%.1f MiB", n / (double) (1 << 20));
    }
    return String.format(Locale.ROOT, "%.2f GiB", n / (double) (1L << 30));
  }
}
