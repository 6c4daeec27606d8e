"""kvtier-server, started with its documented command, shares prefixes between two engines."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cache_server import free_port, start_server
from waiting import wait_until

from kvtier.engine import Engine, Layout

CHUNK = 32
BYTES_PER_TOKEN = 512


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """kvtier-server started with its documented command; yields its URL."""
    port = free_port()
    proc = start_server(port, "0.25")
    try:
        yield f"kvtier://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def chunks(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, CHUNK * BYTES_PER_TOKEN, dtype=np.uint8) for _ in range(n)]


def test_kvtier_server_command_shares_prefixes_between_engines(server_url: str):
    """Two engines (two vLLM instances) reuse each other's chunks through one kvtier-server."""
    layout = Layout("tiny", "bfloat16", 2, 2, 64, bytes_per_token=BYTES_PER_TOKEN)
    settings = {"chunk_size": CHUNK, "remote_url": server_url}
    tokens = np.arange(5 * CHUNK + 7, dtype=np.int32)
    src = chunks(7, 5)
    with Engine(layout, settings) as first:
        assert first.store(tokens, src) == 5
        wait_until(lambda: first.stats()["remote_puts"] == 5, "5 chunks put to the server")
    with Engine(layout, settings) as second:
        assert second.lookup(tokens) == 5 * CHUNK
        dst = [np.zeros_like(a) for a in src]
        assert second.retrieve(tokens, dst) == 5
        assert all(np.array_equal(a, b) for a, b in zip(src, dst, strict=True))


def test_mla_ranks_send_one_copy_and_every_rank_reads_it(server_url: str):
    """MLA with tensor parallelism: every rank holds the same latent KV under one namespace
    (rank=all). A rank other than the first stores only locally; the first rank sends its copy,
    which another rank then loads from the server."""

    def rank(r: int) -> Layout:
        return Layout(
            "mla-model", "bfloat16", 2, 1, 576, bytes_per_token=BYTES_PER_TOKEN,
            tp_size=2, tp_rank=r, mla=True, writes_remote=r == 0,
        )  # fmt: skip

    settings = {"chunk_size": CHUNK, "remote_url": server_url}
    tokens = np.arange(100, 100 + 3 * CHUNK, dtype=np.int32)
    src = chunks(8, 3)
    with Engine(rank(1), settings) as second:
        assert second.store(tokens, src) == 3 and second.lookup(tokens) == 3 * CHUNK
        assert second.java.tiers().awaitIdle(60_000)
        assert second.stats()["remote_puts"] == 0
    with Engine(rank(1), settings) as fresh:
        assert fresh.lookup(tokens) == 0, "the second rank sent nothing"
    with Engine(rank(0), settings) as first:
        assert first.store(tokens, src) == 3
        wait_until(lambda: first.stats()["remote_puts"] == 3, "3 chunks put to the server")
    with Engine(rank(1), settings) as reader:
        assert reader.lookup(tokens) == 3 * CHUNK
        dst = [np.zeros_like(a) for a in src]
        assert reader.retrieve(tokens, dst) == 3
        assert all(np.array_equal(a, b) for a, b in zip(src, dst, strict=True))


def test_kvtier_server_bad_flag_exits_with_usage():
    """An unknown flag is refused with a usage line and exit status 2."""
    exe = Path(sys.executable).with_name("kvtier-server")
    r = subprocess.run([str(exe), "--colour", "blue"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "unknown flag --colour" in r.stderr
    assert "usage: kvtier-server" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_kvtier_server_stops_cleanly_on_sigterm_and_sigint(sig: signal.Signals) -> None:
    """SIGTERM or SIGINT: the server closes its connections and memory and exits 0, saying so;
    a client connected at that moment sees the connection end, not a hang."""
    port = free_port()
    proc = start_server(port, "0.1")
    try:
        client = socket.create_connection(("127.0.0.1", port), timeout=60)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert f"kvtier cache server stopped (SIG{sig.name[3:]})" in out
        assert client.recv(1) == b"", "the connection was closed"
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
