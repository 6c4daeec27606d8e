package io.kvtier.config;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Writes the key table of {@code docs/migrating-from-lmcache.md}: every key of LMCache's
 * configuration, from the list of LMCache's keys the tests load ({@code
 * java-core/src/test/resources/lmcache/lmcache-0.5.6-keys.tsv}), with what kvtier does with it
 * ({@link LmCacheKeys}). The table sits between {@link #BEGIN} and {@link #END}; the rest of the
 * page is hand-written.
 *
 * <pre>
 *   scripts/gen-config-docs            rewrites it with the configuration reference
 *   scripts/gen-config-docs --check    exit 1 if either page is out of date
 * </pre>
 *
 * <p>Stateless and thread-safe.
 */
public final class MigrationGuide {
  /** The line before the generated table. */
  public static final String BEGIN =
      "<!-- BEGIN GENERATED: LMCache keys, from java-core/src/test/resources/lmcache and"
          + " io.kvtier.config.LmCacheKeys; run scripts/gen-config-docs -->";

  /** The line after the generated table. */
  public static final String END = "<!-- END GENERATED: LMCache keys -->";

  /** The key list, relative to the repository root. */
  public static final String KEY_LIST =
      "java-core/src/test/resources/lmcache/lmcache-0.5.6-keys.tsv";

  private MigrationGuide() {}

  /**
   * One row of the key list: an LMCache key, its older names, its default and a typical other
   * value, as YAML flow text ({@code -}: none).
   */
  public record KeyRow(String key, List<String> aliases, String defaultText, String typicalText) {}

  /**
   * The rows of a key list: tab-separated {@code key aliases default typical}, lines starting with
   * {@code #} are comments.
   *
   * @throws IllegalArgumentException for a line without four fields
   */
  public static List<KeyRow> parse(String keyList) {
    List<KeyRow> rows = new ArrayList<>();
    for (String line : keyList.split("\n")) {
      if (line.isBlank() || line.startsWith("#")) {
        continue;
      }
      String[] f = line.split("\t", -1);
      if (f.length != 4) {
        throw new IllegalArgumentException("not four tab-separated fields: " + line);
      }
      rows.add(
          new KeyRow(f[0], f[1].equals("-") ? List.of() : List.of(f[1].split(",")), f[2], f[3]));
    }
    return rows;
  }

  /** The Markdown table of every row's key and kvtier's treatment of it, ending with a newline. */
  public static String keyTable(List<KeyRow> rows) {
    StringBuilder sb = new StringBuilder();
    sb.append("| LMCache key | older names | LMCache default | in kvtier |\n");
    sb.append("|---|---|---|---|\n");
    for (KeyRow r : rows) {
      LmCacheKeys.Treatment t = LmCacheKeys.of(r.key());
      if (t == null) {
        throw new IllegalArgumentException("LmCacheKeys has no treatment for " + r.key());
      }
      String what = t.summary();
      if (t.kind() == LmCacheKeys.Kind.HONOURED) {
        what += " (kvtier's default: `" + ConfigLoader.key(t.target()).defaultText() + "`)";
      }
      if (!t.key().equals(r.key())) {
        what = "LMCache's older name for `" + t.key() + "`: read as it";
      }
      sb.append("| `")
          .append(r.key())
          .append("` | ")
          .append(r.aliases().isEmpty() ? "—" : "`" + String.join("`, `", r.aliases()) + "`")
          .append(" | ")
          .append(
              r.defaultText().equals("-") ? "—" : "`" + ConfigReference.cell(r.defaultText()) + "`")
          .append(" | ")
          .append(ConfigReference.cell(what))
          .append(" |\n");
    }
    return sb.toString();
  }

  /** {@code doc} with its generated table replaced by the one of {@code rows}. */
  public static String withKeyTable(String doc, List<KeyRow> rows) {
    return ConfigReference.replaceSection(doc, BEGIN, END, keyTable(rows));
  }

  /**
   * Rewrites the table of the guide, or with {@code --check} only compares. Usage: {@code
   * MigrationGuide [--check] KEY_LIST PAGE}. Exits 1 when {@code --check} finds the page out of
   * date, 2 on bad arguments.
   */
  public static void main(String[] args) throws IOException {
    boolean check = args.length > 0 && args[0].equals("--check");
    int first = check ? 1 : 0;
    if (args.length - first != 2) {
      System.err.println("usage: MigrationGuide [--check] KEY_LIST PAGE");
      System.exit(2);
    }
    List<KeyRow> rows = parse(Files.readString(Path.of(args[first]), StandardCharsets.UTF_8));
    Path page = Path.of(args[first + 1]);
    String doc = Files.readString(page, StandardCharsets.UTF_8);
    String updated;
    try {
      updated = withKeyTable(doc, rows);
    } catch (IllegalArgumentException e) {
      System.err.println(page + ": " + e.getMessage());
      System.exit(2);
      return;
    }
    ConfigReference.writeOrCheck(page, doc, updated, check);
  }
}
