package io.kvtier.server;

import io.kvtier.wire.Protocol;
import io.netty.channel.Channel;
import java.util.concurrent.atomic.LongAdder;

/** What a {@link CacheServer} has done since it started. Thread-safe; counters only grow. */
final class ServerCounters {
  final LongAdder connections = new LongAdder();
  final LongAdder open = new LongAdder();
  final LongAdder authFailures = new LongAdder();
  final LongAdder protocolErrors = new LongAdder();
  final LongAdder connectionErrors = new LongAdder();
  private final java.util.Set<String> kindsSeen =
      java.util.concurrent.ConcurrentHashMap.newKeySet();
  final LongAdder gets = new LongAdder();
  final LongAdder getHits = new LongAdder();
  final LongAdder getMisses = new LongAdder();
  final LongAdder exists = new LongAdder();
  final LongAdder putsStored = new LongAdder();
  final LongAdder putsDuplicate = new LongAdder();
  final LongAdder putsDropped = new LongAdder();
  final LongAdder bytesReceived = new LongAdder();
  final LongAdder bytesSent = new LongAdder();

  /** Counts a new connection, open until {@code ch} closes. */
  void connected(Channel ch) {
    connections.increment();
    open.increment();
    ch.closeFuture().addListener(f -> open.decrement());
  }

  /** Whether {@code kind} of failure is seen for the first time (then it is logged). */
  boolean firstOfKind(String kind) {
    return kindsSeen.size() < 64 && kindsSeen.add(kind);
  }

  /** Counts a PUT by the status the server answered. */
  void put(byte status) {
    switch (status) {
      case Protocol.STORED -> putsStored.increment();
      case Protocol.DUPLICATE -> putsDuplicate.increment();
      default -> putsDropped.increment();
    }
  }
}
