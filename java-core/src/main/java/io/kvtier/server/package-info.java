/**
 * kvtier's own cache server, {@link io.kvtier.server.CacheServer} (Netty, epoll where available;
 * the engine's CPU and disk tiers as storage; a bounded worker queue that answers what it refuses),
 * shared by several vLLM instances.
 */
package io.kvtier.server;
