/**
 * Network plumbing shared by the remote tiers and the cache server, below both: the cache server's
 * binary {@link io.kvtier.wire.Protocol} and its {@link io.kvtier.wire.FrameDecoder}; the receive
 * path that reads a value straight into a pool slot ({@link io.kvtier.wire.SlotReceiveAllocator},
 * {@link io.kvtier.wire.ValueSink}); and the client side's pipelined connection, {@link
 * io.kvtier.wire.PipelinedConnection}, which owns a channel, its handshake, reconnection with
 * {@link io.kvtier.wire.Backoff}, the {@link io.kvtier.wire.InFlightRequests} waiting for replies
 * (each a {@link io.kvtier.wire.Request} with a deadline), the bound on them ({@link
 * io.kvtier.wire.RejectedRequestException}) and the release of late replies. Protocols plug into it
 * through {@link io.kvtier.wire.PipelinedConnection.Handler}; nothing here knows a tier.
 */
package io.kvtier.wire;
