package io.kvtier.disk;

import java.io.EOFException;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ThreadLocalRandom;
import java.util.stream.Stream;

/**
 * {@link DiskIo} on NIO {@link FileChannel}s, with {@code O_DIRECT} through the JDK's {@code
 * ExtendedOpenOption.DIRECT}. Stateless and thread-safe.
 */
public final class NioDiskIo implements DiskIo {
  /** The shared instance. */
  public static final NioDiskIo INSTANCE = new NioDiskIo();

  /** Temporary files end with this; start-up removes any left by a crash. */
  public static final String TEMP_SUFFIX = ".tmp";

  /**
   * {@code com.sun.nio.file.ExtendedOpenOption.DIRECT} (module jdk.unsupported, present in every
   * JDK kvtier runs on), looked up reflectively because javac warns on any direct use of it and the
   * build treats warnings as errors. Null if the running JDK lacks it.
   */
  private static final OpenOption DIRECT = directOption();

  private NioDiskIo() {}

  private static OpenOption directOption() {
    try {
      return (OpenOption)
          Class.forName("com.sun.nio.file.ExtendedOpenOption").getField("DIRECT").get(null);
    } catch (ReflectiveOperationException e) {
      return null;
    }
  }

  private static Set<OpenOption> options(boolean direct, OpenOption... base) {
    Set<OpenOption> o = new HashSet<>(List.of(base));
    if (direct) {
      if (DIRECT == null) {
        throw new UnsupportedOperationException("this JDK has no O_DIRECT open option");
      }
      o.add(DIRECT);
    }
    return o;
  }

  @Override
  public void writeAtomically(Path target, List<MemorySegment> parts, boolean direct)
      throws IOException {
    Files.createDirectories(target.getParent());
    Path tmp =
        target.resolveSibling(
            target.getFileName()
                + "."
                + Long.toHexString(ThreadLocalRandom.current().nextLong())
                + TEMP_SUFFIX);
    boolean ok = false;
    try {
      try (FileChannel ch =
          FileChannel.open(
              tmp, options(direct, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE))) {
        for (MemorySegment part : parts) {
          ByteBuffer b = part.asByteBuffer();
          while (b.hasRemaining()) {
            ch.write(b);
          }
        }
      }
      Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
      ok = true;
    } finally {
      if (!ok) {
        try {
          Files.deleteIfExists(tmp);
        } catch (IOException suppressed) {
          // the write failure is what matters; start-up removes stray temporary files
        }
      }
    }
  }

  @Override
  public void read(Path file, long offset, MemorySegment into, boolean direct) throws IOException {
    try (FileChannel ch = FileChannel.open(file, options(direct, StandardOpenOption.READ))) {
      ByteBuffer b = into.asByteBuffer();
      long position = offset;
      while (b.hasRemaining()) {
        int n = ch.read(b, position);
        if (n < 0) {
          throw new EOFException(
              file + " ends at " + position + ", " + b.remaining() + " bytes short");
        }
        position += n;
      }
    }
  }

  @Override
  public long size(Path file) throws IOException {
    return Files.size(file);
  }

  @Override
  public void delete(Path file) throws IOException {
    Files.deleteIfExists(file);
  }

  @Override
  public List<Path> list(Path dir) throws IOException {
    if (!Files.isDirectory(dir)) {
      return List.of();
    }
    try (Stream<Path> s = Files.walk(dir)) {
      return new ArrayList<>(s.filter(Files::isRegularFile).toList());
    }
  }

  /** File stores by directory: looking one up reads the mount table; asking it is one statfs. */
  private final java.util.concurrent.ConcurrentHashMap<Path, java.nio.file.FileStore> stores =
      new java.util.concurrent.ConcurrentHashMap<>();

  @Override
  public Object fileSystemOf(Path dir) throws IOException {
    java.nio.file.FileStore fs = stores.get(dir);
    if (fs == null) {
      fs = Files.getFileStore(dir);
      stores.put(dir, fs);
    }
    return fs;
  }

  @Override
  public long usableSpace(Path dir) throws IOException {
    return ((java.nio.file.FileStore) fileSystemOf(dir)).getUsableSpace();
  }
}
