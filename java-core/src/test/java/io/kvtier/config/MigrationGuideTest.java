package io.kvtier.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * docs/migrating-from-lmcache.md's table is the key list the tests load, with kvtier's treatment.
 */
class MigrationGuideTest {
  /** Paths relative to the java-core module directory Maven runs the tests in. */
  private static final Path PAGE = Path.of("..", "docs", "migrating-from-lmcache.md");

  private static final Path KEY_LIST = Path.of("..", MigrationGuide.KEY_LIST);

  @Test
  void guide_keyTable_matchesTheKeyListAndTheirTreatment() throws IOException {
    String doc = Files.readString(PAGE);
    List<MigrationGuide.KeyRow> rows = MigrationGuide.parse(Files.readString(KEY_LIST));
    assertEquals(
        MigrationGuide.withKeyTable(doc, rows),
        doc,
        PAGE.normalize()
            + " is out of date with the LMCache key list or io.kvtier.config.LmCacheKeys: run "
            + ConfigReference.REGENERATE
            + " (and commit the page)");
  }

  @Test
  void keyTable_hasARowPerKey_sayingWhatKvtierDoes() throws IOException {
    List<MigrationGuide.KeyRow> rows = MigrationGuide.parse(Files.readString(KEY_LIST));
    String table = MigrationGuide.keyTable(rows);
    assertEquals(rows.size() + 2, table.lines().count());
    assertTrue(
        table.contains(
            "| `chunk_size` | — | `256` | honoured: same name and meaning (kvtier's default:"
                + " `256`) |"),
        table);
    assertTrue(
        table.contains("| `blocking_timeout_secs` | — | `10` | mapped to `remote_timeout_ms`"));
    assertTrue(
        table.contains("| `enable_pd` | `enable_xpyd` | `false` | ignored (WARNING when on): "),
        table);
    assertTrue(
        table.contains(
            "| `nixl_buffer_size` | — | `null` | LMCache's older name for `pd_buffer_size`"),
        table);
  }
}
