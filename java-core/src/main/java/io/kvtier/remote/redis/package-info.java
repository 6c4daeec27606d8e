/**
 * The Redis/Valkey remote tier: {@link io.kvtier.remote.redis.RedisStore} (standalone, TLS,
 * sentinel, cluster, through Lettuce) with a codec that moves values straight between Netty's
 * buffers and pinned chunk buffers, and a pipelined GET client that reads values into pool slots.
 */
package io.kvtier.remote.redis;
