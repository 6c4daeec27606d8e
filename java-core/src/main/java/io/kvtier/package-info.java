/**
 * kvtier's Java core: the engine that saves the KV cache of prompts in chunks to tiers and loads it
 * back.
 *
 * <ul>
 *   <li>{@link io.kvtier.bridge} — what the Python connector calls across the JPype bridge: host
 *       buffers viewed through FFM, primitives and arrays only.
 *   <li>{@link io.kvtier.cuda} — everything that touches CUDA (JCuda, driver API only); no JCuda
 *       type leaves that package.
 * </ul>
 */
package io.kvtier;
