/**
 * {@link io.kvtier.engine.KvEngine}: the facade the Python connector calls — lookups, two-phase
 * stores and loads of a prompt's chunks, in primitives and arrays. {@link
 * io.kvtier.engine.LookupServer} answers a worker engine's lookups to a scheduler in another
 * process over a Unix domain socket.
 */
package io.kvtier.engine;
