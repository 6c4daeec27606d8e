/**
 * Network plumbing shared by the remote tiers and the cache server: the cache server's binary
 * {@link io.kvtier.wire.Protocol} and its {@link io.kvtier.wire.FrameDecoder}, and the receive path
 * that reads a value straight into a pool slot ({@link io.kvtier.wire.SlotReceiveAllocator}, {@link
 * io.kvtier.wire.ValueSink}).
 */
package io.kvtier.wire;
