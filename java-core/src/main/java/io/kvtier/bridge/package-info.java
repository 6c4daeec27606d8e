/**
 * The surface the Python package calls through JPype.
 *
 * <p>Methods here take primitives, primitive arrays and raw host addresses (a numpy array's or a
 * torch CPU tensor's data pointer with its length in bytes) and return primitives: no generics, no
 * lambdas, one call per batch. {@link io.kvtier.memory.HostMemory} views such addresses as {@link
 * java.lang.foreign.MemorySegment}s without copying; {@link io.kvtier.bridge.BridgeProbe} answers
 * the questions the Python side asks at start-up and measures the cost of a call.
 */
package io.kvtier.bridge;
