package io.kvtier.bridge;

import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeSet;

/**
 * The named fields of one descriptor as the Python side sends them (a {@code dict}, which JPype
 * hands over as a {@link Map}), read with checks. {@link #of} insists on exactly the declared
 * fields; each getter checks one field's type and range. Every failure is an {@link
 * IllegalArgumentException} whose message names the descriptor, the field, the value and what is
 * allowed, so a value passed under the wrong name fails here instead of building a wrong
 * descriptor.
 *
 * <p>Integers arrive from Python as {@link Long}; any integral {@link Number} type is accepted, and
 * nothing else ({@code True} is not a count, {@code 2.0} is not an integer). Immutable and
 * thread-safe as far as the caller's map is not changed while it is read.
 */
final class Fields {
  private final String descriptor;
  private final Map<String, ?> values;

  private Fields(String descriptor, Map<String, ?> values) {
    this.descriptor = descriptor;
    this.values = values;
  }

  /**
   * Returns a reader over {@code values}, which must hold exactly the fields in {@code names}.
   *
   * @throws IllegalArgumentException if {@code values} is null, has a key not in {@code names}, or
   *     lacks one of {@code names}; the message lists them and the fields allowed
   */
  static Fields of(String descriptor, Map<String, ?> values, List<String> names) {
    if (values == null) {
      throw new IllegalArgumentException(descriptor + " needs its fields " + names + ", got null");
    }
    var unknown = new TreeSet<String>();
    for (Object key : values.keySet()) {
      if (!(key instanceof String s) || !names.contains(s)) {
        unknown.add(String.valueOf(key));
      }
    }
    if (!unknown.isEmpty()) {
      throw new IllegalArgumentException(
          descriptor + " has no field " + String.join(", ", unknown) + "; its fields are " + names);
    }
    var missing = names.stream().filter(n -> !values.containsKey(n)).toList();
    if (!missing.isEmpty()) {
      throw new IllegalArgumentException(
          descriptor
              + " field "
              + String.join(", ", missing)
              + " is missing; its fields are "
              + names);
    }
    return new Fields(descriptor, values);
  }

  /**
   * Returns field {@code name} as an {@code int} in {@code [min, max]}.
   *
   * @throws IllegalArgumentException if it is not an integer or lies outside the range
   */
  int intIn(String name, int min, int max) {
    return (int) longIn(name, min, max);
  }

  /**
   * Returns field {@code name} as an {@code int} of at least {@code min}.
   *
   * @throws IllegalArgumentException if it is not an integer, is below {@code min} or does not fit
   *     an {@code int}
   */
  int intAtLeast(String name, int min) {
    return intIn(name, min, Integer.MAX_VALUE);
  }

  /**
   * Returns field {@code name} as a {@code long} of at least {@code min}.
   *
   * @throws IllegalArgumentException if it is not an integer or is below {@code min}
   */
  long longAtLeast(String name, long min) {
    return longIn(name, min, Long.MAX_VALUE);
  }

  /**
   * Returns field {@code name} as a {@code boolean}.
   *
   * @throws IllegalArgumentException if it is not a boolean
   */
  boolean bool(String name) {
    if (values.get(name) instanceof Boolean b) {
      return b;
    }
    throw wrongType(name, "a boolean");
  }

  /**
   * Returns field {@code name} as a {@code String}.
   *
   * @throws IllegalArgumentException if it is not a string
   */
  String string(String name) {
    if (values.get(name) instanceof String s) {
      return s;
    }
    throw wrongType(name, "a string");
  }

  private long longIn(String name, long min, long max) {
    Object v = values.get(name);
    if (!(v instanceof Long || v instanceof Integer || v instanceof Short || v instanceof Byte)) {
      throw wrongType(name, "an integer");
    }
    long n = ((Number) v).longValue();
    if (n < min || n > max) {
      throw new IllegalArgumentException(
          descriptor + " field " + name + " must be " + allowed(n, min, max) + ", got " + n);
    }
    return n;
  }

  /** What {@code [min, max]} allows, phrased for the bound that {@code n} breaks. */
  private static String allowed(long n, long min, long max) {
    if (max == Long.MAX_VALUE || (max == Integer.MAX_VALUE && n < min)) {
      return ">= " + min;
    }
    if (max == Integer.MAX_VALUE) {
      return "<= " + max + " (an int)";
    }
    return "from " + min + " to " + max;
  }

  private IllegalArgumentException wrongType(String name, String expected) {
    Object v = values.get(name);
    String seen =
        v == null ? "null" : Objects.toString(v) + " (" + v.getClass().getSimpleName() + ")";
    return new IllegalArgumentException(
        descriptor + " field " + name + " must be " + expected + ", got " + seen);
  }
}
