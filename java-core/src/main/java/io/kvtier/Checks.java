package io.kvtier;

/**
 * Argument checks that return the checked value, so a constructor reads {@code this.capacityBytes =
 * checkPositive(capacityBytes, "capacityBytes")}. Each failure names the argument, the value and
 * what is allowed; nothing is clamped.
 *
 * <p>Stateless and thread-safe.
 */
public final class Checks {
  private Checks() {}

  /**
   * Returns {@code value} if it is {@code > 0}.
   *
   * @throws IllegalArgumentException if {@code value <= 0}
   */
  public static long checkPositive(long value, String name) {
    if (value <= 0) {
      throw new IllegalArgumentException(name + " must be > 0, got " + value);
    }
    return value;
  }

  /**
   * Returns {@code value} if it is {@code > 0}.
   *
   * @throws IllegalArgumentException if {@code value <= 0}
   */
  public static int checkPositive(int value, String name) {
    if (value <= 0) {
      throw new IllegalArgumentException(name + " must be > 0, got " + value);
    }
    return value;
  }

  /**
   * Returns {@code value} if it is {@code >= 0}.
   *
   * @throws IllegalArgumentException if {@code value < 0}
   */
  public static long checkNonNegative(long value, String name) {
    if (value < 0) {
      throw new IllegalArgumentException(name + " must be >= 0, got " + value);
    }
    return value;
  }

  /**
   * Returns {@code address} if it is a plausible native address: non-zero.
   *
   * @throws IllegalArgumentException if {@code address == 0}
   */
  public static long checkAddress(long address, String name) {
    if (address == 0) {
      throw new IllegalArgumentException(name + " must be a non-null native address, got 0");
    }
    return address;
  }
}
