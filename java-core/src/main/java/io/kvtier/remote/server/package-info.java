/**
 * The remote tier for {@code kvtier://} URLs: {@link io.kvtier.remote.server.ServerStore}, a client
 * of kvtier's own cache server: {@link io.kvtier.wire.Protocol} encoded and decoded over an {@link
 * io.kvtier.wire.PipelinedConnection} (replies by id, reconnecting in the background).
 */
package io.kvtier.remote.server;
