"""Lookups across processes: the scheduler asks each worker's engine over a Unix domain socket.

vLLM builds the connector in the scheduler process and in each worker process; the stored chunks
live in the workers' engines. When the two are different processes, each worker serves its
engine's lookups (:func:`start_server`, Java's ``LookupServer``) at
:func:`socket_path`, and the scheduler's :class:`LookupClient` asks every rank and takes the
minimum. The wire format is in ``docs/lookup-protocol.md``.

This module does not import vLLM; the client side needs no JVM.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kvtier import _bridge
from kvtier.errors import KvTierError

if TYPE_CHECKING:
    from kvtier.engine import Engine

PROTOCOL_VERSION = 4
MAX_SOCKET_PATH_BYTES = 107
"""Longest ``AF_UNIX`` path on Linux, in bytes (``sun_path`` is 108 with the terminating NUL)."""
MAX_REPLY_BYTES = 1 << 20
"""Largest reply the client accepts, in bytes after the length field; more is a broken stream."""

_OP_HELLO = 0
_OP_LOOKUP = 1
_OP_UNPIN = 2
_FLAG_PIN = 1
_REPLY_HEADER = struct.Struct("<IB")  # u32 length, u8 status
_LOOKUP_HEADER = struct.Struct("<IBqBii")  # u32 length, u8 op, i64 id, u8 flags, i32 n, i32 w
_UNPIN = struct.Struct("<IBq")
_HELLO = struct.Struct("<IBI")
_HIT = struct.Struct("<iiiii")
_U32 = struct.Struct("<I")
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


class LookupUnavailable(KvTierError, OSError):
    """A lookup server cannot be reached, timed out or broke the stream; the message names its
    socket path and the cause. The client reconnects on its next call."""

    def __str__(self) -> str:  # OSError formats its args differently; keep ours
        return str(self.args[0])


class LookupFailed(KvTierError, RuntimeError):
    """A lookup server answered with an error; the message is the server's, after its path."""


def socket_path(engine_id: str, rank: int) -> str:
    """Returns where rank ``rank`` of engine ``engine_id`` serves lookups.

    ``<dir>/kvtier-<engine_id>-<rank>.sock``, where ``<dir>`` is ``$KVTIER_RUNTIME_DIR``, else
    ``$XDG_RUNTIME_DIR/kvtier`` when ``XDG_RUNTIME_DIR`` is set, else
    ``<tempfile.gettempdir()>/kvtier-<uid>``. Nothing is created.

    Raises:
        ValueError: ``engine_id`` is empty or holds a path separator, ``rank`` is negative, or
            the path is longer than the 107 bytes ``AF_UNIX`` allows (the message says to set
            ``KVTIER_RUNTIME_DIR`` to a shorter directory).
    """
    if not engine_id or "/" in engine_id or "\0" in engine_id:
        raise ValueError(f"engine_id={engine_id!r} must be non-empty, without '/' or NUL")
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    runtime_dir = os.environ.get("KVTIER_RUNTIME_DIR")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        directory = runtime_dir
    elif xdg:
        directory = os.path.join(xdg, "kvtier")
    else:
        directory = os.path.join(tempfile.gettempdir(), f"kvtier-{os.getuid()}")
    path = os.path.join(directory, f"kvtier-{engine_id}-{rank}.sock")
    length = len(os.fsencode(path))
    if length > MAX_SOCKET_PATH_BYTES:
        raise ValueError(
            f"lookup socket path {path!r} is {length} bytes; a Unix domain socket path holds at "
            f"most {MAX_SOCKET_PATH_BYTES}. Set KVTIER_RUNTIME_DIR to a shorter directory."
        )
    return path


def start_server(engine: Engine, path: str | os.PathLike[str]) -> Any:
    """Serves ``engine``'s lookups at ``path`` until the returned server's ``close()``.

    Returns the Java ``LookupServer`` (its methods raise kvtier's exceptions).
    A missing directory is created with mode 0700; a stale socket file is replaced.

    Raises:
        kvtier.JavaIOError: another server answers at ``path``, a non-socket file is there, or
            the socket cannot be bound.
    """
    return _bridge.worker.start_lookup_server(engine.java, os.fspath(path))


class _ShortRead(OSError):
    """The server closed the connection, or sent what no server of this protocol sends."""


class LookupClient:
    """Asks the lookup servers at ``paths`` (one per rank) and answers with the minimum.

    Each call sends its request to every server first and then reads every reply, so the ranks
    work in parallel. Connections are made on first use, each starting with HELLO; a connection
    that fails, times out, breaks the stream or gets an error reply is closed and made again on
    the next call.

    ``timeout_s`` bounds connecting and each wait for a reply, per server.

    Thread-safe: calls are serialized.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], timeout_s: float = 5.0) -> None:
        if not paths:
            raise ValueError("LookupClient needs at least one socket path")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.paths: tuple[str, ...] = tuple(os.fspath(p) for p in paths)
        self.timeout_s = timeout_s
        self._socks: list[socket.socket | None] = [None] * len(self.paths)  # guarded by _lock
        self._lock = threading.Lock()

    def lookup(
        self,
        request_id: int,
        tokens: Sequence[int] | np.ndarray,
        pin: bool,
        extras: np.ndarray | None = None,
    ) -> int:
        """Leading tokens of the prompt that every rank has stored (chunk-aligned).

        With ``pin`` each rank pins what it reports under ``request_id`` until :meth:`unpin`. A
        call that raises may have pinned on the ranks that answered: unpin ``request_id`` (or let
        the workers' ``pin_timeout_sec`` release them). ``extras`` are the prompt's key extras
        (:func:`kvtier.keys.key_extras`; None for a plain prompt).

        Raises:
            LookupUnavailable: a server cannot be reached or broke the stream.
            LookupFailed: a server answered with an error.
            ValueError: ``tokens`` is not one-dimensional, or ``request_id`` is not an int64.
        """
        return self.lookup_tiers(request_id, tokens, pin, extras)[0]

    def lookup_tiers(
        self,
        request_id: int,
        tokens: Sequence[int] | np.ndarray,
        pin: bool,
        extras: np.ndarray | None = None,
    ) -> tuple[int, int, bool, bool, int]:
        """Like :meth:`lookup`, also returning how much of the hit every rank has in memory
        (-1 without ``pin``), whether a rank is storing the chunk right after the hit, whether
        a rank's remote answer is still pending (ask again), and how much of the hit every rank
        has in its own tiers, CPU or disk (-1 without ``pin``):
        ``(hit tokens, in memory, storing, pending, local)``."""
        body = np.asarray(tokens, dtype="<i4")
        if body.ndim != 1:
            raise ValueError(f"tokens must be one-dimensional, got shape {body.shape}")
        _check_request_id(request_id)
        words = np.asarray(extras if extras is not None else (), dtype="<i8")
        n, w = int(body.shape[0]), int(words.shape[0])
        flags = _FLAG_PIN if pin else 0
        header = _LOOKUP_HEADER.pack(18 + 8 * w + 4 * n, _OP_LOOKUP, request_id, flags, n, w)
        frame = header + words.tobytes() + body.tobytes()
        replies = [_HIT.unpack(r) for r in self._round_trip(frame, _HIT.size)]
        hit = min(r[0] for r in replies)
        # A rank storing the next chunk matters only where its hit is the smallest.
        storing = any(r[2] and r[0] == hit for r in replies)
        pending = any(r[3] for r in replies)
        return hit, min(r[1] for r in replies), storing, pending, min(r[4] for r in replies)

    def unpin(self, request_id: int) -> None:
        """Drops the pins of ``request_id`` on every rank. Unknown ids are fine.

        Raises:
            LookupUnavailable, LookupFailed: as :meth:`lookup`.
        """
        _check_request_id(request_id)
        self._round_trip(_UNPIN.pack(9, _OP_UNPIN, request_id), 0)

    def close(self) -> None:
        """Closes every connection. Idempotent; a later call connects again."""
        with self._lock:
            for i in range(len(self._socks)):
                self._drop(i)

    def __enter__(self) -> LookupClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals ---------------------------------------------------------------------------

    def _round_trip(self, frame: bytes, reply_bytes: int) -> list[bytes]:
        """Sends ``frame`` to every server, then reads each reply's payload (``reply_bytes``).

        Every server that was sent the request is read from, even after another failed, so no
        connection is left with a reply in flight; the first failure in rank order is raised.
        """
        with self._lock:
            errors: list[Exception | None] = [None] * len(self.paths)
            sent: list[int] = []
            for i in range(len(self.paths)):
                try:
                    self._connected(i).sendall(frame)
                    sent.append(i)
                except (LookupUnavailable, LookupFailed) as e:
                    errors[i] = e
                except OSError as e:
                    self._drop(i)
                    errors[i] = self._unavailable(i, e)
            replies: list[bytes] = []
            for i in sent:
                try:
                    replies.append(self._read_ok(i, reply_bytes))
                except (LookupUnavailable, LookupFailed) as e:
                    errors[i] = e
            first = next((e for e in errors if e is not None), None)
            if first is not None:
                raise first
            return replies

    def _connected(self, i: int) -> socket.socket:
        """Rank ``i``'s connection, made and greeted if there is none."""
        sock = self._socks[i]
        if sock is not None:
            return sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socks[i] = sock
        try:
            sock.settimeout(self.timeout_s)
            sock.connect(self.paths[i])
            sock.sendall(_HELLO.pack(5, _OP_HELLO, PROTOCOL_VERSION))
        except OSError as e:
            self._drop(i)
            raise self._unavailable(i, e) from e
        version = _U32.unpack(self._read_ok(i, 4))[0]
        if version != PROTOCOL_VERSION:
            self._drop(i)
            raise LookupFailed(
                f"lookup server {self.paths[i]}: speaks protocol {version}, not {PROTOCOL_VERSION}"
            )
        return sock

    def _read_ok(self, i: int, payload_bytes: int) -> bytes:
        """Reads one reply from rank ``i``; returns its payload if the status is ok.

        Raises:
            LookupUnavailable: I/O error, timeout, closed or malformed stream (connection closed).
            LookupFailed: an error reply (connection closed).
        """
        sock = self._socks[i]
        assert sock is not None
        try:
            length, status = _REPLY_HEADER.unpack(_recv_exact(sock, _REPLY_HEADER.size))
            if length < 1 or length > MAX_REPLY_BYTES:
                raise _ShortRead(f"malformed reply: length field {length}")
            payload = _recv_exact(sock, length - 1)
            if status == 0 and len(payload) != payload_bytes:
                raise _ShortRead(f"malformed reply: {len(payload)} bytes, {payload_bytes} expected")
        except OSError as e:
            self._drop(i)
            raise self._unavailable(i, e) from e
        if status != 0:
            self._drop(i)
            message = payload.decode("utf-8", errors="replace")
            raise LookupFailed(f"lookup server {self.paths[i]}: {message}")
        return payload

    def _unavailable(self, i: int, cause: OSError) -> LookupUnavailable:
        reason = "timed out" if isinstance(cause, TimeoutError) else str(cause) or repr(cause)
        error = LookupUnavailable(f"lookup server {self.paths[i]} unavailable: {reason}")
        error.__cause__ = cause
        return error

    def _drop(self, i: int) -> None:
        sock, self._socks[i] = self._socks[i], None
        if sock is not None:
            sock.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise _ShortRead(f"connection closed by the server after {got} of {n} bytes")
        got += k
    return bytes(buf)


def _check_request_id(request_id: int) -> None:
    if not _I64_MIN <= request_id <= _I64_MAX:
        raise ValueError(f"request_id must fit in a signed 64-bit integer, got {request_id}")
