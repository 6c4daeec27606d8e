package io.kvtier.config;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.function.Function;

/**
 * One configuration key: its name (LMCache's where the meaning is the same), default, unit, the
 * description the configuration reference shows, and its {@link ValueType}: the type name and the
 * allowed values the reference shows, and the parser that turns a raw value (a YAML scalar, map or
 * an environment string) into a typed one. The keys in {@link KvTierConfig} are the one source of
 * the key table in {@code docs/configuration.md} ({@link ConfigReference}).
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

  /**
   * A kind of value: its name and allowed values as the reference shows them, its parser, and how a
   * value (a default) is written in the reference.
   *
   * @param name e.g. {@code integer}, {@code boolean}, {@code enum}
   * @param allowed the values accepted, in words, e.g. {@code by_gpu, striped}
   */
  record ValueType<T>(
      String name, String allowed, Parser<T> parser, Function<? super T, String> shown) {
    ValueType(String name, String allowed, Parser<T> parser) {
      this(name, allowed, parser, String::valueOf);
    }
  }

  private final String name;
  private final T defaultValue;
  private final String unit;
  private final String doc;
  private final ValueType<T> type;

  /**
   * @param unit e.g. {@code tokens} or {@code seconds}; empty when the value has none
   * @param doc what the key does, as the configuration reference shows it (Markdown)
   */
  ConfigKey(String name, T defaultValue, String unit, String doc, ValueType<T> type) {
    this.name = Objects.requireNonNull(name);
    this.defaultValue = defaultValue;
    this.unit = Objects.requireNonNull(unit);
    this.doc = Objects.requireNonNull(doc);
    this.type = Objects.requireNonNull(type);
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

  /** What the key does, as the configuration reference shows it (Markdown). */
  public String doc() {
    return doc;
  }

  /** The type's name, e.g. {@code integer}, {@code boolean}, {@code enum}. */
  public String typeName() {
    return type.name();
  }

  /** The values allowed, in words, e.g. {@code by_gpu, striped}. */
  public String allowedValues() {
    return type.allowed();
  }

  /** The default as the configuration reference writes it, e.g. {@code 5} (GB) or {@code unset}. */
  public String defaultText() {
    return defaultValue == null ? "unset" : type.shown().apply(defaultValue);
  }

  T parse(Object raw) {
    return type.parser().parse(name, raw);
  }

  // ---- parsers ------------------------------------------------------------------------------

  /** The error for a value that is not allowed; the value is shown with secrets masked. */
  static ConfigException invalid(String key, Object raw, String allowed) {
    return new ConfigException(
        key + "=" + Redaction.value(key, raw) + " is not allowed; " + allowed);
  }

  static ValueType<Integer> positiveInt() {
    return new ValueType<>("integer", "1 to " + Integer.MAX_VALUE, positiveIntParser());
  }

  private static Parser<Integer> positiveIntParser() {
    return (key, raw) -> {
      long v = integer(key, raw);
      if (v <= 0 || v > Integer.MAX_VALUE) {
        throw invalid(key, raw, "expected an integer in [1, " + Integer.MAX_VALUE + "]");
      }
      return (int) v;
    };
  }

  static ValueType<Integer> nonNegativeInt() {
    return new ValueType<>("integer", "0 to " + Integer.MAX_VALUE, nonNegativeIntParser());
  }

  private static Parser<Integer> nonNegativeIntParser() {
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
  static ValueType<Long> gigabytes() {
    return new ValueType<>(
        "size",
        ">= 0; fractions allowed, e.g. 0.5",
        gigabytesParser(),
        bytes ->
            BigDecimal.valueOf(bytes)
                .divide(BigDecimal.valueOf(1L << 30))
                .stripTrailingZeros()
                .toPlainString());
  }

  private static Parser<Long> gigabytesParser() {
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

  static ValueType<Boolean> bool() {
    return new ValueType<>("boolean", "true/false, yes/no, on/off, 1/0", boolParser());
  }

  private static Parser<Boolean> boolParser() {
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

  /**
   * A URL starting with one of {@code schemes} (e.g. {@code "redis://"}); empty is none. Another
   * scheme is refused when the configuration loads, with what to use instead where the scheme is
   * one of LMCache's remote stores.
   */
  static ValueType<String> url(String... schemes) {
    List<String> allowed = List.of(schemes);
    return new ValueType<>(
        "URL",
        String.join(", ", allowed),
        (key, raw) -> {
          String s = str(key, raw).trim();
          if (s.isEmpty()) {
            return null;
          }
          for (String scheme : allowed) {
            if (s.startsWith(scheme)) {
              return s;
            }
          }
          throw invalid(
              key,
              raw,
              insteadOf(s) + "expected a URL starting with " + String.join(", ", allowed));
        },
        Redaction::url);
  }

  /** What to use instead of one of LMCache's remote stores that kvtier does not speak, or "". */
  private static String insteadOf(String url) {
    String scheme = url.contains("://") ? url.substring(0, url.indexOf("://")) : "";
    return switch (scheme) {
      case "lm" ->
          "lm:// is LMCache's own server; kvtier's cache server takes its place: run"
              + " `kvtier-server --port N` and set kvtier://host:N; ";
      case "valkey" -> "Valkey speaks the Redis protocol: use redis://host:port; ";
      case "blackhole" -> "blackhole:// keeps nothing: leave remote_url unset for no remote tier; ";
      case "fs" ->
          "fs:// (LMCache's file-system store) has no remote tier here: for a local or mounted"
              + " directory use local_disk, or share chunks through kvtier://; ";
      case "infinistore", "mooncakestore", "s3", "gds" ->
          scheme
              + ":// is not supported; kvtier shares chunks through Redis/Valkey or its own cache"
              + " server (kvtier://); ";
      default -> "";
    };
  }

  /** One of {@code values}, case-insensitive; parsed to its lower-case form. */
  static ValueType<String> oneOf(String... values) {
    List<String> allowed = List.of(values);
    String words =
        allowed.size() == 1
            ? allowed.get(0)
            : String.join(", ", allowed.subList(0, allowed.size() - 1))
                + " or "
                + allowed.getLast();
    return new ValueType<>(
        "enum",
        String.join(", ", allowed),
        (key, raw) -> {
          String v = str(key, raw).trim().toLowerCase(Locale.ROOT);
          if (!allowed.contains(v)) {
            throw invalid(key, raw, "expected " + words);
          }
          return v;
        });
  }

  /** One of the constants of an enum, shown and parsed as the enum says. */
  static <E extends Enum<E>> ValueType<E> enumOf(
      E[] values, Function<E, String> shown, Parser<E> parser) {
    return new ValueType<>(
        "enum",
        String.join(", ", java.util.Arrays.stream(values).map(shown).toList()),
        parser,
        shown);
  }

  /** A comma-separated list (or a YAML list) of strings; empty entries are errors. */
  static ValueType<List<String>> stringList() {
    return new ValueType<>(
        "list",
        "comma-separated (or a YAML list), no empty entries",
        stringListParser(),
        list -> list.isEmpty() ? "unset" : String.join(",", list));
  }

  private static Parser<List<String>> stringListParser() {
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
  static ValueType<Map<String, Object>> map() {
    return new ValueType<>(
        "mapping",
        "a YAML mapping; JSON in the environment variable",
        mapParser(),
        m -> m.isEmpty() ? "{}" : String.valueOf(m));
  }

  private static Parser<Map<String, Object>> mapParser() {
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
