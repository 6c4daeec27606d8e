package io.kvtier.config;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Writes the key table of {@code docs/configuration.md} from the typed keys of {@link KvTierConfig}
 * ({@link KvTierConfig#KEYS} then {@link KvTierConfig#EXTRA_CONFIG_KEYS}): name, type, default,
 * unit, allowed values and description of each. The keys are the one source; the table sits between
 * {@link #BEGIN} and {@link #END} and the rest of the page is hand-written.
 *
 * <pre>
 *   scripts/gen-config-docs            rewrite the table in docs/configuration.md
 *   scripts/gen-config-docs --check    exit 1 if it is out of date
 * </pre>
 *
 * <p>Stateless and thread-safe.
 */
public final class ConfigReference {
  /** The line before the generated table. */
  public static final String BEGIN =
      "<!-- BEGIN GENERATED: configuration keys, from io.kvtier.config.KvTierConfig;"
          + " edit the keys there and run scripts/gen-config-docs -->";

  /** The line after the generated table. */
  public static final String END = "<!-- END GENERATED: configuration keys -->";

  /** The command that regenerates the table, for messages. */
  public static final String REGENERATE = "scripts/gen-config-docs";

  private ConfigReference() {}

  /** The Markdown table of every key, one row per key, ending with a newline. */
  public static String keyTable() {
    List<ConfigKey<?>> keys = new ArrayList<>(KvTierConfig.KEYS);
    keys.addAll(KvTierConfig.EXTRA_CONFIG_KEYS);
    StringBuilder sb = new StringBuilder();
    sb.append("| key | type | default | unit | allowed values | description |\n");
    sb.append("|---|---|---|---|---|---|\n");
    for (ConfigKey<?> k : keys) {
      sb.append("| `")
          .append(k.name())
          .append("` | ")
          .append(cell(k.typeName()))
          .append(" | `")
          .append(cell(k.defaultText()))
          .append("` | ")
          .append(k.unit().isEmpty() ? "—" : cell(k.unit()))
          .append(" | ")
          .append(cell(k.allowedValues()))
          .append(" | ")
          .append(cell(k.doc()))
          .append(" |\n");
    }
    return sb.toString();
  }

  /** {@code text} made safe for a table cell: no line breaks, {@code |} escaped. */
  static String cell(String text) {
    return text.replace("\r", " ").replace("\n", " ").replace("|", "\\|");
  }

  /**
   * Returns {@code doc} with the text between its {@link #BEGIN} and {@link #END} lines replaced by
   * {@link #keyTable()}; everything else is kept as is.
   *
   * @throws IllegalArgumentException if {@code doc} lacks either line or has them out of order
   */
  public static String withKeyTable(String doc) {
    return replaceSection(doc, BEGIN, END, keyTable());
  }

  /**
   * Returns {@code doc} with the text between its {@code begin} and {@code end} lines replaced by
   * {@code body}; everything else is kept as is.
   *
   * @throws IllegalArgumentException if {@code doc} lacks either line or has them out of order
   */
  static String replaceSection(String doc, String begin, String end, String body) {
    int at = doc.indexOf(begin);
    int to = doc.indexOf(end);
    if (at < 0 || to < at) {
      throw new IllegalArgumentException(
          "the page has no generated table: it needs a line "
              + begin
              + " and, after it, a line "
              + end);
    }
    int start = at + begin.length();
    return doc.substring(0, start) + "\n" + body + doc.substring(to);
  }

  /**
   * Writes {@code updated} over {@code page} when it differs from {@code doc}; with {@code check},
   * only says so and exits 1.
   */
  static void writeOrCheck(Path page, String doc, String updated, boolean check)
      throws IOException {
    if (updated.equals(doc)) {
      System.out.println(page + " is up to date");
    } else if (check) {
      System.err.println(page + " is out of date; run " + REGENERATE);
      System.exit(1);
    } else {
      Files.writeString(page, updated, StandardCharsets.UTF_8);
      System.out.println(page + ": generated table rewritten");
    }
  }

  /**
   * Rewrites the key table of a configuration page, or with {@code --check} only compares.
   *
   * <p>Usage: {@code ConfigReference [--check] [path]}; the path defaults to {@code
   * docs/configuration.md}. Exits 1 when {@code --check} finds the page out of date, 2 on a bad
   * argument or a page without the markers.
   */
  public static void main(String[] args) throws IOException {
    boolean check = false;
    Path page = Path.of("docs", "configuration.md");
    for (String a : args) {
      if (a.equals("--check")) {
        check = true;
      } else if (a.startsWith("-")) {
        System.err.println("usage: ConfigReference [--check] [docs/configuration.md]");
        System.exit(2);
      } else {
        page = Path.of(a);
      }
    }
    String doc = Files.readString(page, StandardCharsets.UTF_8);
    String updated;
    try {
      updated = withKeyTable(doc);
    } catch (IllegalArgumentException e) {
      System.err.println(page + ": " + e.getMessage());
      System.exit(2);
      return;
    }
    writeOrCheck(page, doc, updated, check);
  }
}
