package io.kvtier.store;

import io.kvtier.memory.ChunkBuffer;
import java.util.function.LongFunction;

/**
 * What a {@link TierProvider} needs besides the configuration. Immutable.
 *
 * @param rank this process's tensor-parallel rank (picks its disk directory when sharded by GPU)
 * @param chunkBytes the size of one chunk, in bytes (the largest value a tier must hold)
 * @param buffers hands out a buffer of the given length from the CPU tier's pool for a tier to read
 *     into (one reference owned by the caller), or null when none is free
 */
public record TierContext(int rank, long chunkBytes, LongFunction<ChunkBuffer> buffers) {}
