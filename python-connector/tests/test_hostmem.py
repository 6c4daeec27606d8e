"""Host buffers handed to Java by address: bytes round-trip both ways, with no copy."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import kvtier
from kvtier import hostmem


@pytest.mark.parametrize(
    ("dtype", "count"),
    [(np.uint8, 1), (np.float16, 4097), (np.float32, 1 << 16), (np.int64, 12345)],
)
def test_copy_numpy_round_trips_byte_for_byte(dtype, count):
    """Java copies one numpy array into another; every byte arrives."""
    rng = np.random.default_rng(count)
    src = rng.integers(0, 256, size=count * np.dtype(dtype).itemsize, dtype=np.uint8).view(dtype)
    dst = np.zeros_like(src)
    hostmem.copy(src, dst)
    assert np.array_equal(src.view(np.uint8), dst.view(np.uint8))


def test_java_writes_are_seen_in_place():
    """Java writes into the caller's array through its address; Python sees them, no copy back."""
    buf = np.zeros(100_003, dtype=np.uint8)
    hostmem.fill_pattern(buf, 9)
    assert np.array_equal(buf, hostmem.expected_pattern(buf.nbytes, 9))


def test_java_reads_the_callers_bytes():
    """Java's CRC-32 of a numpy array equals zlib's over the same bytes."""
    data = np.random.default_rng(1).integers(0, 256, size=3_000_001, dtype=np.uint8)
    assert hostmem.crc32(data) == zlib.crc32(data.tobytes())


def test_slice_at_offset_touches_only_its_bytes():
    """A view into the middle of an array is addressed exactly: neighbours stay untouched."""
    big = np.zeros(10_000, dtype=np.uint8)
    window = big[1_000:3_000]
    hostmem.fill_pattern(window, 3)
    assert np.array_equal(big[1_000:3_000], hostmem.expected_pattern(2_000, 3))
    assert not big[:1_000].any()
    assert not big[3_000:].any()


def test_parallel_copy_of_64_mib_plus_tail():
    """A multi-threaded copy of an odd size arrives byte for byte."""
    n = (64 << 20) + 17
    src = np.empty(n, dtype=np.uint8)
    hostmem.fill_pattern(src, 77)
    dst = np.zeros(n, dtype=np.uint8)
    hostmem.copy(src, dst, threads=4)
    assert np.array_equal(src, dst)


def test_bytearray_and_memoryview_are_host_buffers():
    """Objects with the buffer protocol work in both directions."""
    src = bytearray(b"kvtier" * 1000)
    dst = bytearray(len(src))
    hostmem.copy(memoryview(src), dst)
    assert dst == src
    assert hostmem.crc32(bytes(src)) == zlib.crc32(src)


def test_torch_cpu_tensor_round_trips():
    """A torch CPU tensor is read and written through its data pointer."""
    torch = pytest.importorskip("torch", reason="torch is not installed in this environment")
    src = torch.arange(0, 50_000, dtype=torch.bfloat16)
    dst = torch.zeros_like(src)
    hostmem.copy(src, dst)
    assert torch.equal(src.view(torch.int16), dst.view(torch.int16))
    hostmem.fill_pattern(dst, 1)
    assert np.array_equal(dst.view(torch.uint8).numpy(), hostmem.expected_pattern(100_000, 1))


def test_non_contiguous_array_is_refused():
    """A strided view cannot be handed over by address."""
    with pytest.raises(ValueError, match="not C-contiguous"):
        hostmem.crc32(np.zeros((8, 8), np.uint8)[:, ::2])


def test_read_only_destination_is_refused():
    """Java never writes into a buffer Python marked read-only."""
    src = np.ones(16, np.uint8)
    dst = np.zeros(16, np.uint8)
    dst.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        hostmem.copy(src, dst)
    with pytest.raises(ValueError, match="read-only"):
        hostmem.fill_pattern(b"immutable", 0)


def test_size_mismatch_is_refused():
    """Copies between buffers of different sizes fail naming both sizes."""
    with pytest.raises(ValueError, match="source has 16 bytes but destination has 8"):
        hostmem.copy(np.zeros(16, np.uint8), np.zeros(8, np.uint8))


def test_non_buffer_is_refused():
    """A Python object without the buffer protocol is a TypeError."""
    with pytest.raises(TypeError, match="not a host buffer"):
        hostmem.crc32(object())


def test_java_side_argument_check_arrives_as_value_error():
    """Java's own validation (negative seed) reaches Python with the Java class and message."""
    with pytest.raises(kvtier.JavaValueError, match="seed must be >= 0, got -1") as info:
        hostmem.fill_pattern(np.zeros(4, np.uint8), -1)
    assert info.value.java_class == "java.lang.IllegalArgumentException"
