package io.kvtier.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

class ConfigReferenceTest {
  /** The page, relative to the java-core module directory Maven runs the tests in. */
  private static final Path PAGE = Path.of("..", "docs", "configuration.md");

  @Test
  void configurationPage_keyTable_matchesTheKeys() throws IOException {
    String doc = Files.readString(PAGE);
    String howTo =
        PAGE.normalize()
            + " and the keys in io.kvtier.config.KvTierConfig disagree: the key table is"
            + " generated from the keys; run "
            + ConfigReference.REGENERATE
            + " (and commit the page), never edit the table by hand";
    String expected;
    try {
      expected = ConfigReference.withKeyTable(doc);
    } catch (IllegalArgumentException e) {
      throw new AssertionError(howTo + ". " + e.getMessage(), e);
    }
    assertEquals(expected, doc, howTo);
  }

  @Test
  void keyTable_hasARowPerKeyWithEveryColumnFilled() {
    List<ConfigKey<?>> keys = new ArrayList<>(KvTierConfig.KEYS);
    keys.addAll(KvTierConfig.EXTRA_CONFIG_KEYS);
    List<String> rows = ConfigReference.keyTable().lines().skip(2).toList();
    assertEquals(keys.size(), rows.size());
    for (int i = 0; i < keys.size(); i++) {
      String row = rows.get(i);
      assertTrue(row.startsWith("| `" + keys.get(i).name() + "` | "), row);
      String[] cells = row.replace("\\|", "").split("\\|", -1);
      assertEquals(8, cells.length, "6 columns: " + row);
      for (int c = 1; c <= 6; c++) {
        assertFalse(cells[c].isBlank(), "column " + c + " of " + row);
      }
    }
  }

  @Test
  void keyTable_showsDefaultsAsConfigured() {
    String table = ConfigReference.keyTable();
    assertTrue(table.contains("| `chunk_size` | integer | `256` | tokens |"), table);
    assertTrue(table.contains("| `max_local_cpu_size` | size | `5` | GB (2^30 bytes) |"), table);
    assertTrue(table.contains("| `local_disk` | list | `unset` |"), table);
    assertTrue(table.contains("| `cache_policy` | enum | `TINYLFU` | — | TINYLFU, LRU, FIFO |"));
    assertTrue(
        table.contains("| `extra_config.gpu_load_mode` | enum | `mapped` | — | mapped, dma"));
  }

  @Test
  void withKeyTable_replacesOnlyTheGeneratedSection() {
    String doc =
        "intro\n" + ConfigReference.BEGIN + "\nold table\n" + ConfigReference.END + "\nend\n";
    String out = ConfigReference.withKeyTable(doc);
    assertEquals(
        "intro\n"
            + ConfigReference.BEGIN
            + "\n"
            + ConfigReference.keyTable()
            + ConfigReference.END
            + "\nend\n",
        out);
    assertEquals(out, ConfigReference.withKeyTable(out), "regenerating is idempotent");
  }

  @Test
  void withKeyTable_withoutMarkers_throwsNamingThem() {
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> ConfigReference.withKeyTable("# x\n"));
    assertTrue(e.getMessage().contains(ConfigReference.BEGIN), e.getMessage());
  }
}
