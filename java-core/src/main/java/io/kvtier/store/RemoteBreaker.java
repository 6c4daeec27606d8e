package io.kvtier.store;

import io.kvtier.key.ChunkKey;
import io.kvtier.memory.ChunkBuffer;
import java.io.IOException;
import java.util.EnumMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.BiConsumer;
import java.util.function.LongSupplier;
import java.util.function.ObjIntConsumer;

/**
 * A circuit breaker in front of a remote tier: once a request to it goes unanswered within its
 * timeout (a frozen or overloaded server keeps the connection open and answers nothing), the tier
 * is not asked at all for a while, so a dead remote costs one timeout, not one per request. While
 * it is open every lookup, read and write of the tier answers at once as a miss or a dropped put,
 * counted as {@link ErrorKind#SKIPPED}. After the pause one request goes through as a probe: an
 * answer closes the breaker, another timeout opens it for twice as long (from {@link
 * #FIRST_PAUSE_MILLIS} up to {@link #MAX_PAUSE_MILLIS}). Refused connections do not open it (they
 * fail fast; the tier reconnects by itself).
 *
 * <p>Thread-safe. Owns the wrapped tier: closing closes it.
 */
public final class RemoteBreaker extends ForwardingTier {
  /** The first pause after a timeout. */
  public static final long FIRST_PAUSE_MILLIS = 1_000;

  /** The longest pause. */
  public static final long MAX_PAUSE_MILLIS = 30_000;

  private static final System.Logger LOG = System.getLogger(RemoteBreaker.class.getName());

  private final LongSupplier nanoTime;
  private final LongAdder skipped = new LongAdder();
  private final AtomicBoolean probing = new AtomicBoolean();
  private final Object lock = new Object();
  private volatile long openUntil; // 0: closed
  private long pauseNanos; // guarded by lock

  /** Wraps {@code tier}, which this object owns from now on. */
  public RemoteBreaker(KvStore tier) {
    this(tier, System::nanoTime);
  }

  /** Like {@link #RemoteBreaker(KvStore)} on the clock {@code nanoTime} (tests move it). */
  public RemoteBreaker(KvStore tier, LongSupplier nanoTime) {
    super(tier);
    this.nanoTime = nanoTime;
  }

  /** Whether the tier is being left alone now. */
  public boolean isOpen() {
    return openUntil != 0;
  }

  /** Whether a request may go to the tier now (false: counted as skipped). */
  private boolean allow() {
    long until = openUntil;
    if (until == 0) {
      return true;
    }
    if (nanoTime.getAsLong() - until >= 0 && probing.compareAndSet(false, true)) {
      return true; // the one probe after the pause
    }
    skipped.increment();
    return false;
  }

  /** Opens or closes the breaker after a request that started when the tier had {@code before}. */
  private void after(long before) {
    if (tier.timeouts() > before) {
      trip();
    } else if (openUntil != 0 && probing.get()) {
      reset();
    }
  }

  private void trip() {
    long pause;
    boolean wasClosed;
    synchronized (lock) {
      wasClosed = openUntil == 0;
      pauseNanos =
          wasClosed
              ? TimeUnit.MILLISECONDS.toNanos(FIRST_PAUSE_MILLIS)
              : Math.min(2 * pauseNanos, TimeUnit.MILLISECONDS.toNanos(MAX_PAUSE_MILLIS));
      pause = pauseNanos;
      openUntil = nanoTime.getAsLong() + pause;
      if (openUntil == 0) {
        openUntil = 1;
      }
      probing.set(false);
    }
    LOG.log(
        wasClosed ? System.Logger.Level.WARNING : System.Logger.Level.DEBUG,
        tier
            + " did not answer in time: not asked for "
            + TimeUnit.NANOSECONDS.toMillis(pause)
            + " ms (requests meanwhile are misses, counted as skipped)");
  }

  private void reset() {
    synchronized (lock) {
      if (openUntil == 0) {
        return;
      }
      openUntil = 0;
      pauseNanos = 0;
      probing.set(false);
    }
    LOG.log(System.Logger.Level.INFO, tier + " answers again");
  }

  @Override
  public boolean contains(ChunkKey key) {
    if (!allow()) {
      return false;
    }
    long before = tier.timeouts();
    try {
      return tier.contains(key);
    } finally {
      after(before);
    }
  }

  @Override
  public int prefixLength(ChunkKey[] keys) {
    if (!allow()) {
      return 0;
    }
    long before = tier.timeouts();
    try {
      return tier.prefixLength(keys);
    } finally {
      after(before);
    }
  }

  @Override
  public CompletableFuture<Integer> prefixLengthAsync(ChunkKey[] keys) {
    if (!allow()) {
      return CompletableFuture.completedFuture(0);
    }
    long before = tier.timeouts();
    CompletableFuture<Integer> f = tier.prefixLengthAsync(keys);
    f.whenComplete((n, err) -> after(before));
    return f;
  }

  /** Whether a request that cannot serve as the probe (its answer is not awaited) is skipped. */
  private boolean skipUnprobed() {
    if (openUntil == 0) {
      return false;
    }
    skipped.increment();
    return true;
  }

  @Override
  public boolean put(ChunkKey key, ChunkBuffer chunk) {
    // puts never wait for their replies: they neither decide the breaker nor probe it
    return !skipUnprobed() && tier.put(key, chunk);
  }

  @Override
  public ChunkBuffer get(ChunkKey key) throws IOException {
    if (!allow()) {
      return null;
    }
    long before = tier.timeouts();
    try {
      return tier.get(key);
    } finally {
      after(before);
    }
  }

  @Override
  public ChunkBuffer[] getBatch(ChunkKey[] keys) {
    return getBatch(keys, null);
  }

  @Override
  public ChunkBuffer[] getBatch(ChunkKey[] keys, ObjIntConsumer<ChunkBuffer> arrived) {
    if (!allow()) {
      return new ChunkBuffer[keys.length];
    }
    long before = tier.timeouts();
    try {
      return tier.getBatch(keys, arrived);
    } finally {
      after(before);
    }
  }

  @Override
  public int prefetch(ChunkKey[] keys, BiConsumer<ChunkKey, ChunkBuffer> sink) {
    return skipUnprobed() ? 0 : tier.prefetch(keys, sink);
  }

  /** The tier's figures, with the requests skipped while the breaker was open. */
  @Override
  public StoreStats stats() {
    StoreStats s = tier.stats();
    long n = skipped.sum();
    if (n == 0) {
      return s;
    }
    Map<ErrorKind, Long> errors = new EnumMap<>(ErrorKind.class);
    errors.putAll(s.errors());
    errors.put(ErrorKind.SKIPPED, n);
    return new StoreStats(
        s.hits(),
        s.misses(),
        s.puts(),
        s.duplicatePuts(),
        s.droppedPuts(),
        s.evictions(),
        s.entries(),
        s.bytes(),
        errors);
  }
}
