/**
 * kvtier's own cache server and its client: {@link io.kvtier.server.CacheServer} (Netty, epoll
 * where available; the engine's CPU and disk tiers as storage), {@link io.kvtier.server.Protocol}
 * (binary, versioned, with a handshake and limits) and {@link io.kvtier.server.ServerStore} (the
 * remote tier for {@code kvtier://} URLs).
 */
package io.kvtier.server;
