/**
 * The surface the Python package calls through JPype: the only core classes Python names.
 *
 * <ul>
 *   <li>{@link io.kvtier.bridge.WorkerBridge}: the worker role (engine, worker, paged KV cache on
 *       the host or a GPU, key namespace and layout descriptors, key extras, host memory, lookup
 *       server). Descriptors are built from named fields and checked here ({@code Fields}), so a
 *       misplaced value fails naming the field.
 *   <li>{@link io.kvtier.bridge.SchedulerBridge}: the scheduler role (its settings).
 *   <li>{@link io.kvtier.bridge.BridgeProbe}: start-up checks and the cost of a call.
 * </ul>
 *
 * <p>Methods take primitives, primitive arrays, strings, maps of named fields and raw host
 * addresses (a numpy array's or a torch tensor's data pointer with its length in bytes); they
 * return primitives or core objects that Python only calls or hands back: no generics in signatures
 * Python depends on, no lambdas, one call per batch. The facades hold no logic beyond argument
 * checks; everything else is delegated.
 */
package io.kvtier.bridge;
