/**
 * The disk tier: {@link io.kvtier.disk.DiskStore} (one self-describing file per chunk, background
 * writers, parallel readers, restart-safe index), the file format ({@code ChunkFileHeader}) and
 * {@link io.kvtier.disk.DiskIo}, the seam where tests inject faults.
 */
package io.kvtier.disk;
