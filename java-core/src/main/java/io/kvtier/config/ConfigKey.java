package io.kvtier.config;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;

/**
 * One configuration key: its name (LMCache's where the meaning is the same), default, unit, one
 * line of documentation and the parser that turns a raw value (a YAML scalar, map or an environment
 * string) into a typed one.
 *
 * <p>Immutable and thread-safe.
 *
 * @param <T> the parsed type
 */
public final class ConfigKey<T> {
  /** Turns a raw value into a typed one, or throws a {@link ConfigException} naming it. */
  @FunctionalInterface
  interface Parser<T> {
    T parse(String key, Object raw);
  }

  private final String name;
  private final T defaultValue;
  private final String unit;
  private final String doc;
  private final Parser<T> parser;

  ConfigKey(String name, T defaultValue, String unit, String doc, Parser<T> parser) {
    this.name = Objects.requireNonNull(name);
    this.defaultValue = defaultValue;
    this.unit = unit;
    this.doc = doc;
    this.parser = parser;
  }

  /** The key as written in YAML, e.g. {@code chunk_size}. */
  public String name() {
    return name;
  }

  /** The environment variable that sets it, e.g. {@code KVTIER_CHUNK_SIZE}. */
  public String envName() {
    return "KVTIER_" + name.toUpperCase(Locale.ROOT);
  }

  /** The default value; null where the key is unset by default. */
  public T defaultValue() {
    return defaultValue;
  }

  /** The unit, e.g. {@code GB (2^30 bytes)}, or an empty string. */
  public String unit() {
    return unit;
  }

  /** One line on what the key does. */
  public String doc() {
    return doc;
  }

  T parse(Object raw) {
    return parser.parse(name, raw);
  }

  // ---- parsers ------------------------------------------------------------------------------

  /** The error for a value that is not allowed; the value is shown with secrets masked. */
  static ConfigException invalid(String key, Object raw, String allowed) {
    return new ConfigException(
        key + "=" + Redaction.value(key, raw) + " is not allowed; " + allowed);
  }

  static Parser<Integer> positiveInt() {
    return (key, raw) -> {
      long v = integer(key, raw);
      if (v <= 0 || v > Integer.MAX_VALUE) {
        throw invalid(key, raw, "expected an integer in [1, " + Integer.MAX_VALUE + "]");
      }
      return (int) v;
    };
  }

  static Parser<Integer> nonNegativeInt() {
    return (key, raw) -> {
      long v = integer(key, raw);
      if (v < 0 || v > Integer.MAX_VALUE) {
        throw invalid(key, raw, "expected an integer in [0, " + Integer.MAX_VALUE + "]");
      }
      return (int) v;
    };
  }

  private static long integer(String key, Object raw) {
    if (raw instanceof Integer || raw instanceof Long) {
      return ((Number) raw).longValue();
    }
    if (raw instanceof String s) {
      try {
        return Long.parseLong(s.trim());
      } catch (NumberFormatException e) {
        throw invalid(key, raw, "expected an integer");
      }
    }
    throw invalid(key, raw, "expected an integer");
  }

  /** Sizes in GB as LMCache writes them (floats allowed), returned in bytes (GB = 2^30 bytes). */
  static Parser<Long> gigabytes() {
    return (key, raw) -> {
      BigDecimal gb;
      try {
        gb = raw instanceof Number n ? new BigDecimal(n.toString()) : new BigDecimal(str(key, raw));
      } catch (NumberFormatException e) {
        throw invalid(key, raw, "expected a size in GB, e.g. 5 or 0.5");
      }
      if (gb.signum() < 0) {
        throw invalid(key, raw, "a size in GB must be >= 0");
      }
      BigDecimal bytes = gb.multiply(BigDecimal.valueOf(1L << 30));
      if (bytes.compareTo(BigDecimal.valueOf(Long.MAX_VALUE)) > 0) {
        throw invalid(key, raw, "too large");
      }
      return bytes.longValue();
    };
  }

  static Parser<Boolean> bool() {
    return (key, raw) -> {
      if (raw instanceof Boolean b) {
        return b;
      }
      String s = str(key, raw).trim().toLowerCase(Locale.ROOT);
      return switch (s) {
        case "true", "1", "yes", "on" -> true;
        case "false", "0", "no", "off" -> false;
        default -> throw invalid(key, raw, "expected true or false");
      };
    };
  }

  static Parser<String> optionalString() {
    return (key, raw) -> {
      String s = str(key, raw).trim();
      return s.isEmpty() ? null : s;
    };
  }

  /** A comma-separated list (or a YAML list) of strings; empty entries are errors. */
  static Parser<List<String>> stringList() {
    return (key, raw) -> {
      List<String> out = new ArrayList<>();
      if (raw instanceof List<?> list) {
        for (Object o : list) {
          out.add(str(key, o).trim());
        }
      } else {
        String s = str(key, raw).trim();
        if (s.isEmpty()) {
          return List.of();
        }
        for (String part : s.split(",", -1)) {
          out.add(part.trim());
        }
      }
      if (out.stream().anyMatch(String::isEmpty)) {
        throw invalid(key, raw, "expected a comma-separated list without empty entries");
      }
      return List.copyOf(out);
    };
  }

  /** A map (YAML mapping, or a JSON/YAML flow mapping in an environment variable). */
  static Parser<Map<String, Object>> map() {
    return (key, raw) -> {
      Object value = raw instanceof String s ? YamlSource.parseFlow(key, s) : raw;
      if (value == null) {
        return Map.of();
      }
      if (!(value instanceof Map<?, ?> m)) {
        throw invalid(key, raw, "expected a mapping, e.g. {use_odirect: true}");
      }
      Map<String, Object> out = new LinkedHashMap<>();
      m.forEach((k, v) -> out.put(String.valueOf(k), v));
      return Collections.unmodifiableMap(out);
    };
  }

  static String str(String key, Object raw) {
    if (raw instanceof String || raw instanceof Number || raw instanceof Boolean) {
      return raw.toString();
    }
    throw invalid(key, raw, "expected a scalar value");
  }
}
