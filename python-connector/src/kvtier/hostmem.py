"""Host buffers handed to the Java core by address, read and written there without a copy.

A host buffer is a C-contiguous numpy array, a contiguous torch CPU tensor, or any object with
the buffer protocol (``bytearray``, ``memoryview``, ...). The caller keeps it alive during the
call; Java views it through FFM for the duration of one call only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kvtier import _bridge


def buffer_address(buf: Any, *, writable: bool = False) -> tuple[int, int]:
    """Returns ``(address, nbytes)`` of a host buffer.

    Raises:
        ValueError: the buffer is not contiguous, lives on a GPU, or is read-only while
            ``writable`` is asked for.
        TypeError: the object is not a host buffer kvtier knows.
    """
    if hasattr(buf, "data_ptr") and hasattr(buf, "is_contiguous"):  # a torch.Tensor
        device = str(buf.device)
        if device != "cpu":
            raise ValueError(f"expected a CPU tensor, got one on {device}")
        if not buf.is_contiguous():
            raise ValueError(f"tensor of shape {tuple(buf.shape)} is not contiguous")
        return int(buf.data_ptr()), int(buf.numel()) * int(buf.element_size())
    if not isinstance(buf, np.ndarray):
        try:
            buf = np.frombuffer(memoryview(buf).cast("B"), dtype=np.uint8)
        except TypeError as e:
            raise TypeError(f"{type(buf).__name__} is not a host buffer ({e})") from None
        except ValueError as e:  # memoryview.cast refuses non-contiguous views
            raise ValueError(f"buffer is not contiguous ({e})") from None
    if not buf.flags.c_contiguous:
        raise ValueError(f"array of shape {buf.shape} is not C-contiguous")
    if writable and not buf.flags.writeable:
        raise ValueError("buffer is read-only")
    return int(buf.ctypes.data), int(buf.nbytes)


def copy(src: Any, dst: Any, *, threads: int = 1) -> None:
    """Copies the bytes of ``src`` into ``dst`` in Java (``threads > 1`` splits the copy).

    Raises:
        ValueError: sizes differ, or a buffer is unfit (see :func:`buffer_address`).
    """
    src_addr, n = buffer_address(src)
    dst_addr, m = buffer_address(dst, writable=True)
    if n != m:
        raise ValueError(f"source has {n} bytes but destination has {m}")
    if n == 0:
        return
    _bridge.worker.copy(src_addr, dst_addr, n, threads)


def crc32(buf: Any) -> int:
    """Returns the CRC-32 of the buffer's bytes as computed in Java (equal to ``zlib.crc32``)."""
    addr, n = buffer_address(buf)
    if n == 0:
        return 0
    return _bridge.worker.crc32(addr, n)


def fill_pattern(buf: Any, seed: int) -> None:
    """Has Java write ``byte[i] = (i * 131 + seed) mod 256`` over the buffer (a test pattern)."""
    addr, n = buffer_address(buf, writable=True)
    if n:
        _bridge.worker.fill_pattern(addr, n, seed)


def expected_pattern(nbytes: int, seed: int) -> np.ndarray:
    """The bytes :func:`fill_pattern` writes, computed in numpy."""
    return ((np.arange(nbytes, dtype=np.uint64) * 131 + seed) % 256).astype(np.uint8)
