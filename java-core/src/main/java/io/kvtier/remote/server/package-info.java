/**
 * The remote tier for {@code kvtier://} URLs: {@link io.kvtier.remote.server.ServerStore}, a client
 * of kvtier's own cache server speaking {@link io.kvtier.wire.Protocol}.
 */
package io.kvtier.remote.server;
