/**
 * kvtier's own cache server, {@link io.kvtier.server.CacheServer} (Netty, epoll where available;
 * the engine's CPU and disk tiers as storage), shared by several vLLM instances.
 */
package io.kvtier.server;
