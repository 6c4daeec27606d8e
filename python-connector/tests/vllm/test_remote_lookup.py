"""A remote store that stops answering never delays vLLM's scheduler: lookups ask it in the
background and say "ask again" until its answer is in (DESIGN invariant 2)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (scripts/lib/vllm-env.sh installs it)")

from engine_loop import CHUNK, prompt, store


@pytest.fixture
def redis() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real redis-server on a free port, and its URL."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield proc, f"redis://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=30)


def test_a_stalled_remote_store_never_delays_a_step(make_loop, redis, tmp_path) -> None:
    """A prompt's chunks are in Redis only (a second engine, empty local tiers) and Redis stops
    answering (SIGSTOP). The scheduler's steps return while it is stopped, with the request
    waiting ("ask again") rather than computed as a miss; once Redis answers again the request
    loads its chunks from Redis and generates what the first engine generated."""
    proc, url = redis
    # A lookup that waited on Redis would hold the step for remote_timeout_ms, then miss.
    settings = {"remote_url": url, "remote_timeout_ms": 10_000}
    first = make_loop(40, settings=settings, model=tmp_path / "model")
    p = prompt(4 * CHUNK + 5, seed=31)
    store(first, "first", p)
    assert first.worker_side._engine.java.tiers().awaitIdle(60_000), "puts to Redis in flight"
    second = make_loop(40, settings=settings, model=tmp_path / "model")
    assert second.worker_side._engine.lookup(p) == 4 * CHUNK, "connected; the chunks are in Redis"
    proc.send_signal(signal.SIGSTOP)
    try:
        second.add("second", p)
        for _ in range(3):  # each step returns while Redis is stopped
            out = second.step()
            assert "second" not in out.num_scheduled_tokens
            assert second.status("second").name == "WAITING"
        assert second.side.remote_pending == 3
    finally:
        proc.send_signal(signal.SIGCONT)
    second.run()
    assert second.reports.outputs["second"] == first.reports.outputs["first"]
    assert second.worker_side.stats()["loaded_tokens"] == 4 * CHUNK
    second.assert_idle()
