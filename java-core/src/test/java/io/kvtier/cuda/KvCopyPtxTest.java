package io.kvtier.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * The shipped PTX, without a GPU: present in the jar's resources, NUL-terminated for the driver, of
 * an ISA version every CUDA 12.x driver loads, and exporting every kernel the launcher calls, with
 * the parameter list the launcher passes. (The build additionally assembles it with {@code ptxas}
 * for sm_70, sm_80 and sm_90 where that tool is installed.)
 */
class KvCopyPtxTest {
  /** {@code kv_copy.cu}'s parameters, as PTX types: 3 pointers, 2 ints, 4 strides, 6 ints. */
  private static final List<String> PARAMS =
      List.of(
          "u64", "u64", "u64", "u32", "u32", "u64", "u64", "u64", "u64", "u32", "u32", "u32", "u32",
          "u32", "u32");

  private static String text() {
    byte[] ptx = KvCopyKernels.ptx();
    assertEquals(0, ptx[ptx.length - 1], "cuModuleLoadData needs a NUL-terminated image");
    return new String(ptx, 0, ptx.length - 1, StandardCharsets.US_ASCII);
  }

  @Test
  void headerTargetsEveryCuda12Driver() {
    String ptx = text();
    Matcher v = Pattern.compile("(?m)^\\.version (\\d+)\\.(\\d+)$").matcher(ptx);
    assertTrue(v.find(), "no .version line");
    int major = Integer.parseInt(v.group(1));
    int minor = Integer.parseInt(v.group(2));
    // CUDA 12.0's driver JIT accepts PTX ISA up to 8.0.
    assertTrue(major < 8 || (major == 8 && minor == 0), "PTX ISA " + major + "." + minor);
    assertTrue(ptx.contains("\n.target sm_70\n"), "target must be sm_70 (Volta) or lower");
    assertTrue(ptx.contains("\n.address_size 64\n"));
  }

  @Test
  void everyKernelIsExportedWithTheLaunchersParameters() {
    String ptx = text();
    Matcher m = Pattern.compile("\\.visible \\.entry (\\w+)\\(([^)]*)\\)").matcher(ptx);
    List<String> entries = new ArrayList<>();
    while (m.find()) {
      entries.add(m.group(1));
      List<String> types = new ArrayList<>();
      Matcher p = Pattern.compile("\\.param \\.(\\w+) ").matcher(m.group(2));
      while (p.find()) {
        types.add(p.group(1));
      }
      assertEquals(PARAMS, types, "parameters of " + m.group(1));
    }
    List<String> expected = new ArrayList<>();
    for (String dir : List.of("gather", "scatter")) {
      for (int w : new int[] {16, 8, 4, 2, 1}) {
        expected.add("kvtier_" + dir + "_" + w);
      }
    }
    assertEquals(expected, entries);
    for (int w : KvCopyKernels.WIDTHS) {
      assertTrue(w <= KvCopyArgs.MAX_WIDTH && Integer.bitCount(w) == 1);
    }
  }

  @Test
  void theCommittedPtxNamesTheSourceItWasBuiltFrom() throws IOException {
    // The source sits beside the resources; every entry it declares is in the PTX.
    Path source = Path.of("src/main/cuda/kv_copy.cu");
    String cu = Files.readString(source);
    Matcher m = Pattern.compile("(?m)^KV_COPY_ENTRY\\((\\w+),").matcher(cu);
    int n = 0;
    String ptx = text();
    while (m.find()) {
      n++;
      assertTrue(ptx.contains(".visible .entry " + m.group(1) + "("), m.group(1));
    }
    assertEquals(10, n);
  }
}
