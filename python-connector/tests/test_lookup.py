"""The scheduler's LookupClient against real engines served by Java's LookupServer."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

import numpy as np
import pytest

from kvtier.engine import Engine, Layout
from kvtier.vllm._lookup import (
    LookupClient,
    LookupFailed,
    LookupUnavailable,
    socket_path,
    start_server,
)

CHUNK = 32
BYTES_PER_TOKEN = 256
LAYOUT = Layout("tiny", "bfloat16", 2, 2, 32, bytes_per_token=BYTES_PER_TOKEN)


@pytest.fixture
def sock_dir() -> Iterator[str]:
    """A short directory for sockets (pytest's tmp_path can exceed the 107-byte AF_UNIX limit)."""
    d = tempfile.mkdtemp(prefix="kvl-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def closing() -> Iterator[list]:
    """Things to close after the test, last first."""
    items: list = []
    yield items
    for item in reversed(items):
        item.close()


def new_engine(closing: list, **settings: object) -> Engine:
    engine = Engine(LAYOUT, {"chunk_size": CHUNK, **settings})
    closing.append(engine)
    return engine


def serve(closing: list, engine: Engine, path: str):
    server = start_server(engine, path)
    closing.append(server)
    return server


def prompt(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 150_000, n, dtype=np.int32)


def store(engine: Engine, tokens: np.ndarray) -> None:
    chunks = [np.zeros(CHUNK * BYTES_PER_TOKEN, np.uint8) for _ in range(len(tokens) // CHUNK)]
    engine.store(tokens, chunks)


def test_lookup_matches_the_engine(closing, sock_dir):
    """Hit counts through the socket equal the in-process engine.lookup for every kind of prompt."""
    engine = new_engine(closing)
    p = prompt(5 * CHUNK + 7, 1)
    store(engine, p)
    diverging = p.copy()
    diverging[3 * CHUNK + 2] ^= 1
    path = os.path.join(sock_dir, "r0.sock")
    serve(closing, engine, path)
    client = LookupClient([path])
    closing.append(client)
    for i, tokens in enumerate([p, p[: 2 * CHUNK + 1], diverging, prompt(3 * CHUNK, 9), p[:0]]):
        assert client.lookup(i, tokens, pin=False) == engine.lookup(tokens)
    assert client.lookup(9, p.tolist(), pin=False) == 5 * CHUNK, "a plain list works too"


def test_lookup_is_the_minimum_over_ranks(closing, sock_dir):
    """Two ranks holding different amounts of the prompt: the client answers the smaller."""
    p = prompt(6 * CHUNK, 2)
    full, part = new_engine(closing), new_engine(closing)
    store(full, p)
    store(part, p[: 2 * CHUNK])
    paths = [os.path.join(sock_dir, f"r{i}.sock") for i in range(2)]
    serve(closing, full, paths[0])
    serve(closing, part, paths[1])
    both = LookupClient(paths)
    closing.append(both)
    with LookupClient(paths[:1]) as first, LookupClient(paths[1:]) as second:
        assert first.lookup(1, p, pin=False) == 6 * CHUNK
        assert second.lookup(1, p, pin=False) == 2 * CHUNK
    assert both.lookup(1, p, pin=False) == 2 * CHUNK
    assert both.lookup(2, prompt(2 * CHUNK, 3), pin=False) == 0


def test_pin_keeps_chunks_until_unpin(closing, sock_dir):
    """A pinned lookup protects the chunks from eviction; after unpin they can be evicted."""
    four_slots_gb = 4 * CHUNK * BYTES_PER_TOKEN / (1 << 30)
    engine = new_engine(closing, max_local_cpu_size=four_slots_gb, cache_policy="LRU")
    p = prompt(2 * CHUNK, 8)
    store(engine, p)
    path = os.path.join(sock_dir, "r0.sock")
    serve(closing, engine, path)
    client = LookupClient([path])
    closing.append(client)

    assert client.lookup(77, p, pin=True) == 2 * CHUNK
    for i in range(6):
        store(engine, prompt(2 * CHUNK, 200 + i))
    assert engine.lookup(p) == 2 * CHUNK, "pinned chunks survive churn"
    client.unpin(77)
    client.unpin(77)  # idempotent
    for i in range(6):
        store(engine, prompt(2 * CHUNK, 300 + i))
    assert engine.lookup(p) == 0, "unpinned chunks are evicted again"


def test_dead_server_is_unavailable_and_the_client_reconnects(closing, sock_dir):
    """A closed server gives LookupUnavailable naming its path; after a restart the same client
    connects again."""
    engine = new_engine(closing)
    p = prompt(3 * CHUNK, 4)
    store(engine, p)
    path = os.path.join(sock_dir, "r0.sock")
    server = start_server(engine, path)
    client = LookupClient([path], timeout_s=2.0)
    closing.append(client)
    assert client.lookup(1, p, pin=False) == 3 * CHUNK

    server.close()
    with pytest.raises(LookupUnavailable, match=path) as broken:
        client.lookup(2, p, pin=False)  # the open connection was closed by the server
    assert isinstance(broken.value, OSError)
    with pytest.raises(LookupUnavailable, match=path):
        client.lookup(3, p, pin=False)  # nothing listens: connecting fails
    with pytest.raises(LookupUnavailable, match=path):
        client.unpin(3)

    serve(closing, engine, path)
    assert client.lookup(4, p, pin=False) == 3 * CHUNK


def test_one_dead_rank_fails_the_lookup_but_not_the_others(closing, sock_dir):
    """With one rank down the call raises naming that rank; once it is up the call succeeds."""
    engine = new_engine(closing)
    p = prompt(2 * CHUNK, 5)
    store(engine, p)
    live, dead = os.path.join(sock_dir, "r0.sock"), os.path.join(sock_dir, "r1.sock")
    serve(closing, engine, live)
    client = LookupClient([live, dead], timeout_s=1.0)
    closing.append(client)
    with pytest.raises(LookupUnavailable, match=dead):
        client.lookup(1, p, pin=False)
    serve(closing, engine, dead)
    assert client.lookup(2, p, pin=False) == 2 * CHUNK


def test_server_error_reply_raises_lookup_failed(closing, sock_dir):
    """An engine error on the server (engine closed) comes back as LookupFailed with its message."""
    engine = new_engine(closing)
    path = os.path.join(sock_dir, "r0.sock")
    serve(closing, engine, path)
    client = LookupClient([path])
    closing.append(client)
    assert client.lookup(1, prompt(CHUNK, 6), pin=False) == 0
    engine.close()
    with pytest.raises(LookupFailed, match="KvEngine is closed") as failed:
        client.lookup(2, prompt(CHUNK, 6), pin=True)
    assert path in str(failed.value)
    client.unpin(2)  # unpinning needs no open engine; the client reconnected for it


def test_silent_server_times_out(sock_dir):
    """A socket that accepts but never answers gives LookupUnavailable after timeout_s."""
    path = os.path.join(sock_dir, "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(path)
        silent.listen()
        with LookupClient([path], timeout_s=0.2) as client:
            with pytest.raises(LookupUnavailable, match="timed out"):
                client.lookup(1, [1, 2, 3], pin=False)


def test_bad_arguments_are_refused():
    """Token arrays must be 1-D, request ids int64, and a client needs a path."""
    client = LookupClient(["/nonexistent/kvtier.sock"])
    with pytest.raises(ValueError, match="one-dimensional"):
        client.lookup(1, np.zeros((2, 2), np.int32), pin=False)
    with pytest.raises(ValueError, match="64-bit"):
        client.lookup(1 << 63, [1], pin=False)
    with pytest.raises(ValueError, match="at least one"):
        LookupClient([])


def test_socket_path_prefers_kvtier_runtime_dir(monkeypatch):
    """KVTIER_RUNTIME_DIR wins over XDG_RUNTIME_DIR."""
    monkeypatch.setenv("KVTIER_RUNTIME_DIR", "/run/kv")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert socket_path("e1", 3) == "/run/kv/kvtier-e1-3.sock"


def test_socket_path_uses_xdg_runtime_dir(monkeypatch):
    """Without KVTIER_RUNTIME_DIR, $XDG_RUNTIME_DIR/kvtier."""
    monkeypatch.delenv("KVTIER_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert socket_path("e1", 0) == "/run/user/1000/kvtier/kvtier-e1-0.sock"


def test_socket_path_falls_back_to_a_per_user_temp_dir(monkeypatch):
    """With neither variable, <tempdir>/kvtier-<uid>."""
    monkeypatch.delenv("KVTIER_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    expected = os.path.join(tempfile.gettempdir(), f"kvtier-{os.getuid()}", "kvtier-e1-1.sock")
    assert socket_path("e1", 1) == expected


def test_socket_path_too_long_names_the_variable(monkeypatch):
    """A path over 107 bytes is refused with a hint to set KVTIER_RUNTIME_DIR."""
    monkeypatch.setenv("KVTIER_RUNTIME_DIR", "/" + "d" * 90)
    with pytest.raises(ValueError, match="KVTIER_RUNTIME_DIR") as e:
        socket_path("0123456789abcdef", 7)
    assert "107" in str(e.value)
    monkeypatch.setenv("KVTIER_RUNTIME_DIR", "/" + "d" * 80)
    assert len(socket_path("e", 7)) <= 107


def test_socket_path_refuses_bad_ids():
    """An engine id with a separator, or a negative rank, is refused."""
    with pytest.raises(ValueError, match="engine_id"):
        socket_path("a/b", 0)
    with pytest.raises(ValueError, match="rank"):
        socket_path("e", -1)
