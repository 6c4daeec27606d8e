from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def make_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Makes ``engine_loop.Loop`` objects (vLLM's real scheduler with kvtier's connector), shut
    down after the test."""
    from engine_loop import Loop  # imports vLLM: only for the tests that use it

    sockets = tempfile.mkdtemp(prefix="kv")  # a Unix socket path holds at most 107 bytes
    monkeypatch.setenv("KVTIER_RUNTIME_DIR", sockets)
    loops: list[Loop] = []

    def make(num_blocks: int, **kwargs: Any) -> Loop:
        loop = Loop(tmp_path / f"loop{len(loops)}", num_blocks, **kwargs)
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.close()
    shutil.rmtree(sockets, ignore_errors=True)


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A ``KVTierWorker`` for the CPU-layout caches of ``test_worker_layout`` (its stand-in vLLM
    config, chunks of its ``CHUNK`` tokens), shut down after the test."""
    from test_worker_layout import CHUNK, vllm_config

    from kvtier.vllm.worker import KVTierWorker

    monkeypatch.setenv("KVTIER_RUNTIME_DIR", str(tmp_path))
    w = KVTierWorker(vllm_config(f"w{time.monotonic_ns()}"), {"chunk_size": CHUNK})
    yield w
    w.shutdown()
