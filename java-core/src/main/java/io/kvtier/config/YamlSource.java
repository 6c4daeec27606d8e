package io.kvtier.config;

import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.constructor.SafeConstructor;
import org.yaml.snakeyaml.error.YAMLException;

/** Reads configuration YAML with SnakeYAML's safe constructor (no arbitrary types). Stateless. */
final class YamlSource {
  private YamlSource() {}

  private static Yaml yaml() {
    LoaderOptions options = new LoaderOptions();
    options.setAllowDuplicateKeys(false);
    return new Yaml(new SafeConstructor(options));
  }

  /**
   * Returns the top-level mapping of a YAML file, named in messages by the {@code variable} that
   * named it; an empty file is an empty mapping.
   *
   * @throws ConfigException if the file cannot be read, does not parse, or is not a mapping
   */
  static Map<String, Object> readFile(Path file, String variable) {
    Object doc;
    try (Reader r = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
      doc = yaml().load(r);
    } catch (IOException e) {
      throw new ConfigException(variable + "=" + file + " cannot be read: " + e);
    } catch (YAMLException e) {
      // SnakeYAML quotes the offending line, which may hold a secret.
      throw new ConfigException(
          variable + "=" + file + " is not valid YAML: " + Redaction.text(e.getMessage()));
    }
    if (doc == null) {
      return Map.of();
    }
    if (!(doc instanceof Map<?, ?> m)) {
      throw new ConfigException(
          variable
              + "="
              + file
              + " must hold a mapping of keys to values, not a "
              + doc.getClass().getSimpleName());
    }
    Map<String, Object> out = new LinkedHashMap<>();
    m.forEach((k, v) -> out.put(String.valueOf(k), v));
    return out;
  }

  /** Parses a flow value such as {@code {"use_odirect": true}} (JSON is valid YAML). */
  static Object parseFlow(String key, String text) {
    try {
      return yaml().load(text);
    } catch (YAMLException e) {
      throw new ConfigException(
          key
              + "="
              + Redaction.value(key, text)
              + " does not parse: "
              + Redaction.text(e.getMessage()));
    }
  }
}
