package io.kvtier.engine;

import io.kvtier.key.ChunkKey;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Predicate;

/**
 * Which stored chunks also serve shorter, block-aligned prefixes of themselves (docs/keys.md,
 * "Block prefixes"): a prompt that shares only the first {@code k} blocks of a stored chunk finds
 * that chunk here and loads those {@code k} blocks from it.
 *
 * <p>A stored chunk is recorded once, under the key of its first block (the hash its one-block
 * prefix has), with the hashes of all its block-aligned proper prefixes. A lookup computes the same
 * hashes for its own chunk, takes the candidates recorded under its first block and keeps the one
 * that shares the most blocks: one map probe per lookup, one map write per stored chunk.
 *
 * <p>Entries are hints: a recorded chunk may have been evicted since, so the caller checks (and
 * pins) the source in the tiers before using it and {@link #forget}s it when gone. The index holds
 * at most {@code maxSources} chunks; beyond that a sweep drops every entry whose source the tiers
 * no longer hold, and if that is not enough, everything (the tiers' own keys still hit).
 *
 * <p>Thread-safe.
 */
final class BlockIndex {
  /** Most chunks recorded under one first block (newest kept): bounds a lookup's comparisons. */
  static final int MAX_CANDIDATES = 8;

  /** A stored chunk and its block prefix hashes ({@code h1, h2} pairs, one block first). */
  record Candidate(ChunkKey source, long[] prefixes) {
    /** How many leading blocks of {@code query} (pairs, one block first) this chunk holds. */
    int sharedBlocks(long[] query) {
      int n = Math.min(prefixes.length, query.length) / 2;
      int k = 0;
      while (k < n && prefixes[2 * k] == query[2 * k] && prefixes[2 * k + 1] == query[2 * k + 1]) {
        k++;
      }
      return k;
    }
  }

  /** A source that holds the first {@code blocks} blocks of a lookup's chunk. */
  record Match(ChunkKey source, int blocks) {}

  private final ConcurrentHashMap<ChunkKey, Candidate[]> byFirstBlock = new ConcurrentHashMap<>();
  private final AtomicInteger sources = new AtomicInteger();
  private final ReentrantLock sweeping = new ReentrantLock();
  private final int maxSources;
  private final Predicate<ChunkKey> held;

  /**
   * @param maxSources chunks recorded at most before a sweep
   * @param held whether the tiers of this process still hold a chunk (the sweep's test)
   */
  BlockIndex(int maxSources, Predicate<ChunkKey> held) {
    this.maxSources = Math.max(1, maxSources);
    this.held = held;
  }

  /**
   * Records that {@code source} holds the prefixes {@code prefixes} ({@code h1, h2} pairs, one
   * block first, proper prefixes only). Nothing is recorded for fewer than one prefix.
   */
  void record(ChunkKey source, long[] prefixes) {
    if (prefixes.length < 2) {
      return;
    }
    ChunkKey first = new ChunkKey(source.namespace(), prefixes[0], prefixes[1]);
    Candidate added = new Candidate(source, prefixes);
    boolean[] grew = new boolean[1];
    byFirstBlock.compute(
        first,
        (k, old) -> {
          if (old == null) {
            grew[0] = true;
            return new Candidate[] {added};
          }
          for (Candidate c : old) {
            if (c.source.equals(source)) {
              return old;
            }
          }
          int keep = Math.min(old.length, MAX_CANDIDATES - 1);
          Candidate[] now = new Candidate[keep + 1];
          now[0] = added;
          System.arraycopy(old, 0, now, 1, keep);
          grew[0] = keep == old.length;
          return now;
        });
    if (grew[0] && sources.incrementAndGet() > maxSources) {
      sweep();
    }
  }

  /**
   * The recorded chunks that share at least one block with a lookup's chunk whose block prefix
   * hashes are {@code query} ({@code h1, h2} pairs, one block first), most shared blocks first,
   * each capped at {@code maxBlocks}.
   */
  List<Match> matches(long namespace, long[] query, int maxBlocks) {
    if (query.length < 2 || maxBlocks < 1) {
      return List.of();
    }
    Candidate[] found = byFirstBlock.get(new ChunkKey(namespace, query[0], query[1]));
    if (found == null) {
      return List.of();
    }
    List<Match> out = new ArrayList<>(found.length);
    for (Candidate c : found) {
      out.add(new Match(c.source, Math.min(maxBlocks, c.sharedBlocks(query))));
    }
    out.sort(Comparator.comparingInt(Match::blocks).reversed());
    return out;
  }

  /** Drops {@code source}, which the tiers no longer hold, from its first block's candidates. */
  void forget(long namespace, long[] query, ChunkKey source) {
    if (query.length < 2) {
      return;
    }
    boolean[] dropped = new boolean[1];
    byFirstBlock.computeIfPresent(
        new ChunkKey(namespace, query[0], query[1]),
        (k, old) -> {
          Candidate[] now =
              Arrays.stream(old).filter(c -> !c.source.equals(source)).toArray(Candidate[]::new);
          dropped[0] = now.length < old.length;
          return now.length == 0 ? null : now;
        });
    if (dropped[0]) {
      sources.decrementAndGet();
    }
  }

  /** Chunks recorded now. */
  int size() {
    return sources.get();
  }

  /** Forgets everything (a cache reset). */
  void clear() {
    byFirstBlock.clear();
    sources.set(0);
  }

  /**
   * Drops the entries whose source the tiers no longer hold; if that leaves more than three
   * quarters of the limit, drops everything. Runs on the thread whose record crossed the limit,
   * once per crossing.
   */
  private void sweep() {
    if (!sweeping.tryLock()) {
      return;
    }
    try {
      if (sources.get() <= maxSources) {
        return;
      }
      int left = 0;
      for (ChunkKey first : byFirstBlock.keySet()) {
        Candidate[] now =
            byFirstBlock.computeIfPresent(
                first,
                (k, old) -> {
                  Candidate[] kept =
                      Arrays.stream(old).filter(c -> held.test(c.source)).toArray(Candidate[]::new);
                  return kept.length == 0 ? null : kept;
                });
        left += now == null ? 0 : now.length;
      }
      if (left > maxSources / 4 * 3) {
        byFirstBlock.clear();
        left = 0;
      }
      sources.set(left);
    } finally {
      sweeping.unlock();
    }
  }
}
