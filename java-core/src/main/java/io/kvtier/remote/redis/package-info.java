/**
 * The Redis/Valkey remote tier: {@link io.kvtier.remote.redis.RedisStore} (standalone, TLS,
 * sentinel, cluster, through Lettuce, which handles its own connections) with a codec that moves
 * values straight between Netty's buffers and pinned chunk buffers; and, for plain-TCP GETs, {@code
 * RespGetClient}: RESP encoding and decoding on an {@link io.kvtier.wire.PipelinedConnection}
 * (replies in order), reading values into pool slots, with {@code ClusterGets} keeping one per
 * cluster node.
 */
package io.kvtier.remote.redis;
