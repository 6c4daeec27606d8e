package io.kvtier.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kvtier.disk.DiskInspectorTest;
import io.kvtier.memory.ChunkPool;
import io.kvtier.memory.MmapAllocator;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The {@code kvtier} command's output and exit status, on a directory a real disk tier wrote. */
class CliTest {
  @TempDir Path dir;
  final ByteArrayOutputStream out = new ByteArrayOutputStream();
  final ByteArrayOutputStream err = new ByteArrayOutputStream();

  int run(String... args) {
    out.reset();
    err.reset();
    return new Cli(
            new PrintStream(out, true, StandardCharsets.UTF_8),
            new PrintStream(err, true, StandardCharsets.UTF_8))
        .run(args);
  }

  String out() {
    return out.toString(StandardCharsets.UTF_8);
  }

  String err() {
    return err.toString(StandardCharsets.UTF_8);
  }

  @Test
  void diskCommandsOnARealTier() throws Exception {
    List<Path> files;
    try (ChunkPool pool = new ChunkPool(MmapAllocator.INSTANCE, 1 << 16, 64L << 16, 1 << 22)) {
      files = DiskInspectorTest.fill(dir, pool, 2);
    }
    assertEquals(Cli.OK, run("disk", "stats", dir.toString()));
    assertTrue(out().contains(": 4 chunk files, "), out());
    assertTrue(out().contains("namespace 0000000000000005: 2 chunks, "), out());
    assertTrue(out().contains("namespace 0000000000000006: 2 chunks, "), out());

    assertEquals(Cli.OK, run("disk", "verify", dir.toString()));
    assertTrue(out().contains("4 files checked, 0 did not check out"), out());
    DiskInspectorTest.flipByte(files.getFirst(), 5000);
    assertEquals(Cli.PROBLEMS, run("disk", "verify", dir.toString()));
    assertTrue(out().contains("bad: " + files.getFirst() + ": data checksum mismatch"), out());
    assertTrue(Files.exists(files.getFirst()));
    assertEquals(Cli.PROBLEMS, run("disk", "verify", dir.toString(), "--delete"));
    assertTrue(out().contains("(deleted)"), out());
    assertFalse(Files.exists(files.getFirst()));
    assertEquals(Cli.OK, run("disk", "verify", dir.toString()));

    assertEquals(Cli.OK, run("disk", "clear", dir.toString(), "--namespace", "0000000000000006"));
    assertTrue(out().contains("deleted 2 files"), out());
    assertEquals(Cli.OK, run("disk", "clear", dir.toString()));
    assertTrue(out().contains("deleted 1 files"), out());
  }

  @Test
  void badArgumentsAndMissingDirectoriesAreUsageErrorsWithAMessage() {
    assertEquals(Cli.USAGE, run());
    assertTrue(err().contains("usage: kvtier <command>"));
    assertEquals(Cli.OK, run("--help"));
    assertTrue(out().contains("disk verify DIR [--delete]"));
    assertEquals(Cli.OK, run("disk", "verify", "--help"));
    assertTrue(out().contains("CRC32C"));
    assertEquals(Cli.USAGE, run("frobnicate"));
    assertTrue(err().contains("unknown command 'frobnicate'"));
    assertEquals(Cli.USAGE, run("disk", "stats"));
    assertTrue(err().contains("one directory expected"));
    assertEquals(Cli.USAGE, run("disk", "stats", dir.toString(), "--delete"));
    assertTrue(err().contains("unknown flag --delete"));
    assertEquals(Cli.USAGE, run("disk", "stats", dir.resolve("nowhere").toString()));
    assertTrue(err().contains("nowhere: not a directory"), err());
    assertEquals(Cli.USAGE, run("disk", "clear", dir.toString(), "--namespace", "model-a"));
    assertTrue(err().contains("16 hex digits"));
  }

  @Test
  void configCheckPrintsEverySettingWithItsSourceAndMasksSecrets() throws Exception {
    Path yaml = dir.resolve("kvtier.yaml");
    Files.writeString(
        yaml,
        "chunk_size: 512\nmax_local_cpu_size: 1.5\nremote_url: redis://:hunter2@cache:6379\n");
    assertEquals(Cli.OK, run("config", "check", yaml.toString()));
    assertTrue(
        out()
            .contains("chunk_size                 = 512  (file " + yaml + " (KVTIER_CONFIG_FILE))"),
        out());
    assertTrue(out().contains("max_local_cpu_size         = 1.500 GB"), out());
    assertFalse(out().contains("hunter2"), "the password never shows");
    assertTrue(out().contains("configuration OK"));

    Files.writeString(yaml, "chunk_sise: 512\n");
    assertEquals(Cli.USAGE, run("config", "check", yaml.toString()));
    assertTrue(err().contains("chunk_sise") && err().contains("chunk_size"), err());
    assertEquals(Cli.USAGE, run("config", "check", dir.resolve("none.yaml").toString()));
    assertTrue(err().contains("does not exist"), err());
  }
}
