package io.kvtier.bench;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;

/**
 * One measure of a same-run comparison, taken over several rounds in which kvtier and its baseline
 * take turns (so both see the same noise of a shared machine). The goal is judged on the median
 * ratio; the range of the rounds is printed beside it.
 */
final class Rounds {
  /** Measured rounds per measure, after one kvtier round that warms the JIT and is not counted. */
  static final int COUNT = 5;

  private final String what;
  private final String baseline;
  private final double goal;
  private final List<double[]> rounds = new ArrayList<>(); // {kvtier B/s, baseline B/s}

  Rounds(String what, String baseline, double goal) {
    this.what = what;
    this.baseline = baseline;
    this.goal = goal;
  }

  /** One side of a round: the rates of two measures, {write B/s, read B/s}. */
  interface Side {
    double[] run() throws Exception;
  }

  /**
   * Runs one uncounted kvtier round (JIT warm-up), then {@link #COUNT} rounds in which the baseline
   * and kvtier take turns, adding each round's write and read rates to {@code write} and {@code
   * read}.
   */
  static void compare(Side baseline, Side kvtier, Rounds write, Rounds read) throws Exception {
    kvtier.run();
    for (int round = 0; round < COUNT; round++) {
      double[] base = baseline.run();
      double[] ours = kvtier.run();
      write.add(ours[0], base[0]);
      read.add(ours[1], base[1]);
    }
  }

  void add(double kvtier, double base) {
    rounds.add(new double[] {kvtier, base});
  }

  /** The median ratio of kvtier to the baseline. */
  double ratio() {
    return median(rounds.stream().mapToDouble(r -> r[0] / r[1]).toArray());
  }

  /** A table line: median rates, median ratio, the ratios' range, and the verdict. */
  String line() {
    double[] ratios = rounds.stream().mapToDouble(r -> r[0] / r[1]).sorted().toArray();
    double r = ratio();
    return String.format(
        Locale.ROOT,
        "  %-22s kvtier %6.2f GB/s   %s %6.2f GB/s   %.2fx (%.2f-%.2f) %s >= %.1fx",
        what,
        median(rounds.stream().mapToDouble(x -> x[0]).toArray()) / 1e9,
        baseline,
        median(rounds.stream().mapToDouble(x -> x[1]).toArray()) / 1e9,
        r,
        ratios[0],
        ratios[ratios.length - 1],
        r >= goal ? "MET" : "MISSED",
        goal);
  }

  static double median(double[] v) {
    double[] s = v.clone();
    Arrays.sort(s);
    int n = s.length;
    return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  }
}
