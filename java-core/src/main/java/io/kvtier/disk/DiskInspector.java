package io.kvtier.disk;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.LongConsumer;
import java.util.stream.Stream;

/**
 * A disk tier's directory looked at from outside a running engine (the {@code kvtier disk}
 * commands): what it holds, whether every file checks out, and emptying it. It reads and deletes
 * only kvtier's own files ({@code <dir>/<namespace>/<xx>/<hash>.kvc} and the {@code .tmp} files of
 * interrupted writes); anything else under the directory is reported and left alone.
 *
 * <p>An engine using the directory at the same time keeps working: a file deleted under it is a
 * miss. Stateless; thread-safe.
 */
public final class DiskInspector {
  private DiskInspector() {}

  /** What one namespace (one model, dtype and layout; docs/keys.md) holds. */
  public record Namespace(
      String id, long chunks, long bytes, long oldestMillis, long newestMillis) {}

  /**
   * A directory's contents: its namespaces by id; partial files of interrupted writes; files that
   * are not kvtier's.
   */
  public record Summary(
      List<Namespace> namespaces, long partialFiles, long partialBytes, List<Path> foreign) {
    /** Chunk files of every namespace. */
    public long chunks() {
      return namespaces.stream().mapToLong(Namespace::chunks).sum();
    }

    /** Bytes of every namespace's chunk files. */
    public long bytes() {
      return namespaces.stream().mapToLong(Namespace::bytes).sum();
    }
  }

  /** A file that did not check out, and why. */
  public record Problem(Path file, String reason) {}

  /**
   * Sizes the chunk files of {@code dir} by namespace from the file system alone (no file is read).
   *
   * @throws NoSuchFileException if {@code dir} is not a directory
   * @throws IOException if the directory cannot be listed
   */
  public static Summary summarize(Path dir) throws IOException {
    Map<String, long[]> byNamespace = new TreeMap<>(); // chunks, bytes, oldest, newest
    long partial = 0;
    long partialBytes = 0;
    List<Path> foreign = new ArrayList<>();
    for (Path f : files(dir)) {
      long size = Files.size(f);
      String name = f.getFileName().toString();
      if (name.endsWith(NioDiskIo.TEMP_SUFFIX)) {
        partial++;
        partialBytes += size;
        continue;
      }
      String ns = namespaceOf(dir, f);
      if (ns == null) {
        foreign.add(f);
        continue;
      }
      long mtime = Files.getLastModifiedTime(f).toMillis();
      long[] t =
          byNamespace.computeIfAbsent(ns, k -> new long[] {0, 0, Long.MAX_VALUE, Long.MIN_VALUE});
      t[0]++;
      t[1] += size;
      t[2] = Math.min(t[2], mtime);
      t[3] = Math.max(t[3], mtime);
    }
    List<Namespace> out = new ArrayList<>();
    byNamespace.forEach((ns, t) -> out.add(new Namespace(ns, t[0], t[1], t[2], t[3])));
    return new Summary(out, partial, partialBytes, foreign);
  }

  /**
   * Reads every chunk file of {@code dir} whole and checks it: its header, its length, its data's
   * checksum, that it decompresses, and that it lies where its key puts it. Partial files of
   * interrupted writes are problems too (an engine deletes them at start). With {@code delete},
   * each file with a problem is deleted. {@code progress} is told how many files were checked after
   * each one.
   *
   * @return the files with problems, in the order found
   * @throws NoSuchFileException if {@code dir} is not a directory
   * @throws IOException if the directory cannot be listed
   */
  public static List<Problem> verify(Path dir, boolean delete, LongConsumer progress)
      throws IOException {
    List<Problem> problems = new ArrayList<>();
    long checked = 0;
    try (ChunkFileCodec codec = new ChunkFileCodec(false, false)) {
      for (Path f : files(dir)) {
        String name = f.getFileName().toString();
        String reason = null;
        if (name.endsWith(NioDiskIo.TEMP_SUFFIX)) {
          reason = "a partial file of an interrupted write";
        } else if (name.endsWith(DiskStore.SUFFIX)) {
          reason = check(codec, dir, f);
        }
        if (reason != null) {
          problems.add(new Problem(f, reason));
          if (delete) {
            Files.deleteIfExists(f);
          }
        }
        progress.accept(++checked);
      }
    }
    return problems;
  }

  private static String check(ChunkFileCodec codec, Path dir, Path f) throws IOException {
    try {
      ChunkFileHeader h = codec.verify(NioDiskIo.INSTANCE, f);
      String expected =
          HexFormat.of().toHexDigits(h.key().namespace())
              + "/"
              + h.key().hashHex().substring(0, 2)
              + "/"
              + h.key().hashHex()
              + DiskStore.SUFFIX;
      if (!dir.relativize(f).toString().endsWith(expected)) {
        return "holds key " + h.key() + ", not the one its path says";
      }
      return null;
    } catch (CorruptChunkException e) {
      return e.getMessage();
    } catch (NoSuchFileException e) {
      return null; // deleted meanwhile (an engine evicted it): nothing to check
    }
  }

  /**
   * Deletes {@code dir}'s chunk files (of namespace {@code namespace} only, when not null) and
   * partial files; files that are not kvtier's stay, and so do the directories.
   *
   * @return {@code [files, bytes]} deleted
   * @throws NoSuchFileException if {@code dir} is not a directory
   * @throws IOException if the directory cannot be listed or a file cannot be deleted
   */
  public static long[] clear(Path dir, String namespace) throws IOException {
    long files = 0;
    long bytes = 0;
    for (Path f : files(dir)) {
      String name = f.getFileName().toString();
      boolean partial = name.endsWith(NioDiskIo.TEMP_SUFFIX);
      String ns = partial ? directoryNamespace(dir, f) : namespaceOf(dir, f);
      if ((!partial && ns == null) || (namespace != null && !namespace.equals(ns))) {
        continue;
      }
      long size;
      try {
        size = Files.size(f);
      } catch (NoSuchFileException e) {
        continue;
      }
      if (Files.deleteIfExists(f)) {
        files++;
        bytes += size;
      }
    }
    return new long[] {files, bytes};
  }

  /** The namespace id of chunk file {@code f}, or null when it is not at a chunk file's place. */
  private static String namespaceOf(Path dir, Path f) {
    String name = f.getFileName().toString();
    if (!name.endsWith(DiskStore.SUFFIX)) {
      return null;
    }
    Path rel = dir.relativize(f);
    int n = rel.getNameCount();
    if (n < 3) {
      return null;
    }
    String ns = rel.getName(n - 3).toString();
    String shard = rel.getName(n - 2).toString();
    String hash = name.substring(0, name.length() - DiskStore.SUFFIX.length());
    boolean ok =
        ns.length() == 16
            && isHex(ns)
            && shard.length() == 2
            && hash.length() == 32
            && isHex(hash)
            && hash.startsWith(shard);
    return ok ? ns : null;
  }

  /** The namespace directory a file lies in, or null when it lies in none. */
  private static String directoryNamespace(Path dir, Path f) {
    Path rel = dir.relativize(f);
    int n = rel.getNameCount();
    String ns = n >= 3 ? rel.getName(n - 3).toString() : "";
    return ns.length() == 16 && isHex(ns) ? ns : null;
  }

  private static boolean isHex(String s) {
    return s.chars().allMatch(c -> (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  }

  private static List<Path> files(Path dir) throws IOException {
    if (!Files.isDirectory(dir)) {
      throw new NoSuchFileException(dir.toString(), null, "not a directory");
    }
    try (Stream<Path> s = Files.walk(dir)) {
      return s.filter(Files::isRegularFile).sorted().toList();
    } catch (UncheckedIOException e) {
      throw e.getCause();
    }
  }
}
