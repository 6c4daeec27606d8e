/**
 * The remote tier: {@link io.kvtier.remote.RedisStore} (Redis/Valkey standalone, TLS, sentinel,
 * cluster, through Lettuce) with a codec that moves values straight between Netty's buffers and
 * pinned chunk buffers.
 */
package io.kvtier.remote;
