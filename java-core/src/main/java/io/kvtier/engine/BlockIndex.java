package io.kvtier.engine;

import io.kvtier.key.ChunkKey;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Predicate;

/**
 * Which stored chunks also serve shorter, block-aligned prefixes of themselves (docs/keys.md,
 * "Block prefixes"): a prompt that shares only the first {@code k} blocks of a stored chunk finds
 * that chunk here and loads those {@code k} blocks from it.
 *
 * <p>A stored chunk is recorded once, under the key of its first block (the hash its one-block
 * prefix has), with the hashes of its block prefixes. A lookup computes the same hashes for its own
 * chunk, takes the candidates recorded under its first block and keeps the one that shares the most
 * blocks: one map probe per lookup, one map write per stored chunk.
 *
 * <p>Entries are hints: a recorded chunk may have been evicted since, so the caller checks (and
 * pins) the source in the tiers before using it and {@link #forget}s it when gone. The index
 * remembers the last {@code maxSources} chunks recorded (first in, first out, O(1) per record),
 * which the caller sizes to a multiple of what its tiers can hold.
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
  private final int maxSources;

  /** Recorded candidates in order, a ring of {@code maxSources} once full (guarded by this). */
  private ChunkKey[] ringKeys = new ChunkKey[16];

  private Candidate[] ringCandidates = new Candidate[16];
  private int ringNext;
  private int ringSize;

  /**
   * @param maxSources chunks remembered at most (the oldest are forgotten first)
   */
  BlockIndex(int maxSources) {
    this.maxSources = Math.max(1, maxSources);
  }

  /**
   * Records that {@code source} starts with the prefixes {@code prefixes} ({@code h1, h2} pairs,
   * one block first; its own hash may be the last). Nothing is recorded for fewer than two
   * prefixes.
   */
  void record(ChunkKey source, long[] prefixes) {
    if (prefixes.length < 4) {
      return;
    }
    ChunkKey first = new ChunkKey(source.namespace(), prefixes[0], prefixes[1]);
    Candidate added = new Candidate(source, prefixes);
    if (byFirstBlock.putIfAbsent(first, new Candidate[] {added}) != null) {
      boolean[] fresh = new boolean[1];
      byFirstBlock.compute(
          first,
          (k, old) -> {
            if (old == null) {
              fresh[0] = true;
              return new Candidate[] {added};
            }
            for (Candidate c : old) {
              if (c.source.equals(source)) {
                return old;
              }
            }
            fresh[0] = true;
            int keep = Math.min(old.length, MAX_CANDIDATES - 1);
            Candidate[] now = new Candidate[keep + 1];
            now[0] = added;
            System.arraycopy(old, 0, now, 1, keep);
            return now;
          });
      if (!fresh[0]) {
        return;
      }
    }
    Candidate dropped;
    ChunkKey droppedKey;
    synchronized (this) {
      if (ringSize == ringKeys.length && ringSize < maxSources) {
        int grown = (int) Math.min(maxSources, 2L * ringSize);
        ringKeys = Arrays.copyOf(ringKeys, grown);
        ringCandidates = Arrays.copyOf(ringCandidates, grown);
        ringNext = ringSize;
      }
      droppedKey = ringKeys[ringNext];
      dropped = ringCandidates[ringNext];
      ringKeys[ringNext] = first;
      ringCandidates[ringNext] = added;
      ringNext = (ringNext + 1) % ringKeys.length;
      ringSize = Math.min(ringSize + 1, ringKeys.length);
    }
    if (dropped != null) {
      remove(droppedKey, c -> c == dropped);
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
    if (query.length >= 2) {
      remove(new ChunkKey(namespace, query[0], query[1]), c -> c.source.equals(source));
    }
  }

  private void remove(ChunkKey first, Predicate<Candidate> which) {
    byFirstBlock.computeIfPresent(
        first,
        (k, old) -> {
          Candidate[] now = Arrays.stream(old).filter(which.negate()).toArray(Candidate[]::new);
          return now.length == old.length ? old : now.length == 0 ? null : now;
        });
  }

  /** Chunks recorded now (for tests). */
  int size() {
    return byFirstBlock.values().stream().mapToInt(c -> c.length).sum();
  }

  /** Forgets everything (a cache reset). */
  void clear() {
    synchronized (this) {
      Arrays.fill(ringKeys, null);
      Arrays.fill(ringCandidates, null);
      ringNext = 0;
      ringSize = 0;
    }
    byFirstBlock.clear();
  }
}
