package io.kvtier.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import org.junit.jupiter.api.Test;

/**
 * Checks what the Python wheel bundles: java-core's jar and its runtime jars (target/lib), run in a
 * fresh JVM with the flags kvtier._jvm passes.
 */
class PackagedRuntimeIT {
  private static final Path CORE_TARGET = Path.of(System.getProperty("kvtier.core.dir"));
  private static final Path JAVA = Path.of(System.getProperty("kvtier.java.home"), "bin", "java");

  private static List<Path> runtimeJars() throws IOException {
    List<Path> jars = new ArrayList<>();
    try (Stream<Path> core = Files.list(CORE_TARGET);
        Stream<Path> lib = Files.list(CORE_TARGET.resolve("lib"))) {
      core.filter(p -> p.getFileName().toString().matches("kvtier-core-[^-]+(-SNAPSHOT)?\\.jar"))
          .forEach(jars::add);
      lib.filter(p -> p.toString().endsWith(".jar")).forEach(jars::add);
    }
    return jars;
  }

  private static List<String> nativeEntries(List<Path> jars) throws IOException {
    List<String> names = new ArrayList<>();
    for (Path jar : jars) {
      try (ZipFile zip = new ZipFile(jar.toFile())) {
        zip.stream()
            .map(ZipEntry::getName)
            .filter(n -> n.endsWith(".so") || n.endsWith(".dll") || n.endsWith(".dylib"))
            .forEach(names::add);
      }
    }
    return names;
  }

  @Test
  void runtimeJars_bundleJCudaDriverNativesOnly() throws IOException {
    List<String> natives = nativeEntries(runtimeJars());
    assertTrue(
        natives.stream().anyMatch(n -> n.matches("lib/libJCudaDriver-.*-linux-x86_64\\.so")),
        "the JCuda driver library must be bundled; found " + natives);
    for (String unwanted : List.of("NvPTXCompiler", "JCudaRuntime", "JNvrtc")) {
      assertFalse(
          natives.stream().anyMatch(n -> n.contains(unwanted)),
          unwanted + " must not be bundled; found " + natives);
    }
  }

  @Test
  void packagedJars_inFreshJvmWithKvtierFlags_runWithoutWarnings() throws Exception {
    String classpath =
        String.join(
            java.io.File.pathSeparator, runtimeJars().stream().map(Path::toString).toList());
    Process p =
        new ProcessBuilder(
                JAVA.toString(),
                "-Xrs",
                "--enable-native-access=ALL-UNNAMED",
                "-cp",
                classpath,
                "io.kvtier.bridge.BridgeProbe")
            .start();
    assertTrue(p.waitFor(60, TimeUnit.SECONDS), "the probe JVM did not exit within 60 s");
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
    assertEquals(0, p.exitValue(), "stdout: " + out + "\nstderr: " + err);
    assertTrue(out.startsWith("kvtier 0."), "the manifest version must be readable: " + out);
    assertTrue(out.contains("host copy ok"), out);
    assertTrue(out.contains("CUDA: "), out);
    if (out.contains("CUDA: unavailable")) {
      // The bundled JCuda library was found and loaded up to its dependency on the driver.
      assertTrue(out.contains("libcuda.so"), "CUDA must be missing for want of a driver: " + out);
    }
    // Restricted FFM calls and JCuda's System.load print a warning unless native access is enabled.
    assertFalse(err.contains("WARNING"), "unexpected JVM warnings: " + err);
  }
}
