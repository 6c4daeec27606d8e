/**
 * {@link io.kvtier.engine.KvEngine}: the facade the Python connector calls — lookups, two-phase
 * stores and loads of a prompt's chunks, in primitives and arrays.
 */
package io.kvtier.engine;
