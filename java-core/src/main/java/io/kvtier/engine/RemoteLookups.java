package io.kvtier.engine;

import io.kvtier.key.ChunkKey;
import io.kvtier.store.TieredStore;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongSupplier;

/**
 * Remote existence checks for the scheduler's lookups, answered without waiting (DESIGN invariant
 * 2). The first lookup of a prompt's remote part sends the question and answers "pending"; the
 * scheduler asks again on a later step and gets the count once the reply is in. A question still
 * unanswered after the bound counts as a miss, and so does one that finds too many questions
 * pending (both counted).
 *
 * <p>A question is the keys themselves (their first and last key and how many): the scheduler pins
 * under a new id at each attempt, and the chain hash makes the last key stand for all the tokens
 * before it. An answer serves every lookup of the same question for as long as the bound after it
 * was asked (a request vLLM could not admit in this step is looked up again in the next, and
 * several requests of one prompt arrive together): one round trip, not one per attempt. Answers
 * nobody collects are swept by {@link #sweep}.
 *
 * <p>Thread-safe.
 */
final class RemoteLookups {
  /** Questions pending at most; beyond it a lookup's remote part is a miss (counted). */
  static final int MAX_PENDING = 4096;

  private record Question(ChunkKey first, ChunkKey last, int count) {}

  private record Pending(CompletableFuture<Integer> answer, long askedAtNanos) {}

  private final TieredStore tiers;
  private final LongSupplier nanoClock;
  private final long boundNanos;
  private final Map<Question, Pending> pending = new ConcurrentHashMap<>();
  private final LongAdder asked = new LongAdder();
  private final LongAdder timedOut = new LongAdder();
  private final LongAdder rejected = new LongAdder();

  /**
   * @param boundNanos how long an answer may take before the lookup counts it as a miss
   */
  RemoteLookups(TieredStore tiers, LongSupplier nanoClock, long boundNanos) {
    this.tiers = tiers;
    this.nanoClock = nanoClock;
    this.boundNanos = boundNanos;
  }

  /**
   * How many leading {@code keys} a remote tier holds, if known now. Does not block.
   *
   * @param keys the prompt's keys after its local prefix, at least one
   * @return the count, or -1 while the answer is pending (ask again later)
   */
  int prefix(ChunkKey[] keys) {
    Question q = new Question(keys[0], keys[keys.length - 1], keys.length);
    Pending p = pending.get(q);
    if (p == null) {
      if (pending.size() >= MAX_PENDING) {
        rejected.increment();
        return 0;
      }
      asked.increment();
      p = new Pending(safe(tiers.remotePrefixAsync(keys)), nanoClock.getAsLong());
      Pending raced = pending.putIfAbsent(q, p);
      p = raced != null ? raced : p;
    }
    if (p.answer().isDone()) {
      if (nanoClock.getAsLong() - p.askedAtNanos() > boundNanos) {
        pending.remove(q, p); // too old to reuse: ask again
        return prefix(keys);
      }
      return Math.min(p.answer().join(), keys.length);
    }
    if (nanoClock.getAsLong() - p.askedAtNanos() > boundNanos) {
      pending.remove(q, p);
      timedOut.increment();
      return 0;
    }
    return -1;
  }

  /** Drops answers older than twice the bound that no lookup came back for. */
  void sweep() {
    long now = nanoClock.getAsLong();
    pending.values().removeIf(p -> now - p.askedAtNanos() > 2 * boundNanos);
  }

  /** Questions sent to the remote tiers since start. */
  long askedCount() {
    return asked.sum();
  }

  /** Lookups whose remote answer took longer than the bound (counted as misses). */
  long timedOutCount() {
    return timedOut.sum();
  }

  /** Lookups refused a remote question because too many were pending (counted as misses). */
  long rejectedCount() {
    return rejected.sum();
  }

  /** Questions waiting for an answer, or answered and kept for reuse, now. */
  int pendingCount() {
    return pending.size();
  }

  /** {@code answer}, with an exceptional completion (a tier breaking its contract) as 0. */
  private static CompletableFuture<Integer> safe(CompletableFuture<Integer> answer) {
    return answer.exceptionally(e -> 0);
  }
}
