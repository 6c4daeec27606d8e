/**
 * The disk tier: {@link io.kvtier.disk.DiskStore} (one self-describing file per chunk, background
 * writers, parallel readers, restart-safe), which orchestrates {@code DiskIndex} (what is where,
 * pins, LRU order, the byte budget), {@code ChunkFileCodec} (the file format: {@code
 * ChunkFileHeader}, LZ4, CRC32C, padding), {@code IoWorkers} (the prioritised background workers)
 * and {@link io.kvtier.disk.DiskIo}, the seam where tests inject faults.
 */
package io.kvtier.disk;
