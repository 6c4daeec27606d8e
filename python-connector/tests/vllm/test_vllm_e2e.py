"""End to end with real vLLM on CPU: greedy outputs with a warm kvtier cache equal cold ones and
those of vLLM without kvtier.

Each run is a fresh process (``run_llm.py``) with the small local model, prompts given as token
ids and vLLM's own prefix cache off (so every hit is kvtier's). Runs that share a configuration
share one process: one engine serves several cases, each case a step of the run. Every run gets
the same threading (``examples/vllm_cpu.py``: thread count and bound cores set explicitly, with or
without a connector) and float32, the dtype in which a different prefill split (a warm request
computes fewer tokens) cannot flip a greedy token; each comparison checks that the runs compared
really used the same dtype and threads, and fails naming both when they did not.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "vllm", reason="vLLM (CPU) is not installed; scripts/lib/vllm-env.sh installs it"
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "examples"))

import tiny_model  # noqa: E402
from vllm_runs import (  # noqa: E402
    CHUNK,
    CONNECTOR,
    DTYPE,
    Run,
    Started,
    Step,
    launch,
    run,
    same_runtime,
    start,
    with_settings,
)

# Prompts, one set per case. The baseline run generates all of them once without kvtier.
TWICE = tiny_model.prompt(4 * CHUNK + 137, seed=1)
SHARED_PREFIX = tiny_model.prompt(3 * CHUNK, seed=2)
PREFIXED = [SHARED_PREFIX + tiny_model.prompt(n, seed=10 + n) for n in (100, 300, 600)]
BLOCK = 128
"""vLLM's block size on CPU: hits are whole blocks (docs/keys.md, "Block prefixes")."""
PREFIXED.append(PREFIXED[2][: 3 * CHUNK + 150] + tiny_model.prompt(100, seed=77))
"""Shares 150 tokens of PREFIXED[2]'s fourth chunk: hits its first whole block from it."""
OTHER_FIRST_CHUNK = tiny_model.prompt(CHUNK, seed=9) + PREFIXED[0][CHUNK:]
"""PREFIXED[0] with another first chunk: its output must differ, or outputs could not show a
wrong first chunk."""
BATCH = [tiny_model.prompt(4 * CHUNK + 60, seed=20 + i) for i in range(4)]
BATCH_TOKENS = 48
EXHAUST = [tiny_model.prompt(6 * CHUNK + 3, seed=s) for s in (5, 6)]
DISK = tiny_model.prompt(5 * CHUNK + 11, seed=4)
REMOTE = tiny_model.prompt(3 * CHUNK + 20, seed=30)


@pytest.fixture(scope="session")
def model() -> str:
    return str(tiny_model.build())


BASELINE_STEPS = {
    "twice": Step([TWICE]),
    "prefixed": Step([*PREFIXED, OTHER_FIRST_CHUNK]),
    "batch": Step(BATCH, batch=True, max_tokens=BATCH_TOKENS),
    "exhaust": Step(EXHAUST),
    "disk": Step([DISK]),
    "remote": Step([REMOTE]),
}


@pytest.fixture(scope="session")
def started(model: str) -> dict[str, Started]:
    """The baseline and the default run, started together (their steps run one at a time)."""
    return {
        "baseline": start(model, [BASELINE_STEPS[n] for n in BASELINE_STEPS], connector=None),
        "default": start(
            model,
            [
                Step([TWICE]),
                Step([TWICE]),
                Step(PREFIXED),
                Step(BATCH, batch=True, max_tokens=BATCH_TOKENS),
                Step(BATCH, batch=True, max_tokens=BATCH_TOKENS),
            ],
            CONNECTOR,
        ),
    }


@pytest.fixture(scope="session")
def baseline(started: dict[str, Started]) -> dict[str, Run]:
    """vLLM without kvtier on every case's prompts, in one process: each case's reference."""
    got = started["baseline"].result()
    return {
        name: Run([got.steps[i]], got.dtype, got.threads, {})
        for i, name in enumerate(BASELINE_STEPS)
    }


@pytest.fixture(scope="session")
def default_run(started: dict[str, Started]) -> Run:
    """One vLLM with kvtier's default settings serving three cases in turn: a prompt asked
    twice, prompts sharing a prefix, and four prompts batched at once (then again)."""
    return started["default"].result()


def test_outputs_depend_on_every_chunk_of_the_prompt(baseline: dict[str, Run]) -> None:
    """The model's greedy outputs change when only the first chunk of a prompt changes, and
    differ between prompts: equal outputs below are evidence that kvtier loaded the right KV."""
    *prefixed, other = baseline["prefixed"].tokens(0)
    assert other != prefixed[0]
    assert len({tuple(t) for t in prefixed}) == len(prefixed)
    assert all(len(set(t)) > 1 for t in prefixed), "the model repeats one token"


def test_same_prompt_twice_hits_and_generates_the_same_tokens(
    default_run: Run, baseline: dict[str, Run]
) -> None:
    """A 4.5-chunk prompt asked twice (scheduler and worker in one process): the second request
    loads 4 chunks and the last chunk's one whole block from kvtier, and both outputs equal vLLM's
    without kvtier."""
    same_runtime(without_kvtier=baseline["twice"], with_kvtier=default_run)
    assert default_run.cached(0) == [0]
    assert default_run.cached(1) == [4 * CHUNK + BLOCK]
    assert default_run.tokens(0) == default_run.tokens(1) == baseline["twice"].tokens(0)


def test_shared_prefixes_hit_partially_and_match_a_run_without_kvtier(
    default_run: Run, baseline: dict[str, Run]
) -> None:
    """Prompts sharing 3 chunks, then differing: later prompts hit the shared chunks only; the
    last one shares 150 more tokens with a stored chunk and also hits that chunk's first whole
    block (read out of it). Every output equals vLLM's without the connector."""
    same_runtime(without_kvtier=baseline["prefixed"], with_kvtier=default_run)
    assert default_run.cached(2) == [0, 3 * CHUNK, 3 * CHUNK, 3 * CHUNK + BLOCK]
    assert default_run.tokens(2) == baseline["prefixed"].tokens(0)[: len(PREFIXED)]


def test_chunked_prefill_and_preemption_keep_outputs_identical(
    default_run: Run, baseline: dict[str, Run]
) -> None:
    """Four prompts at once in a KV cache too small for all of them (vLLM preempts) and a token
    budget that splits every prefill into steps: the second round hits every saved chunk and all
    outputs equal vLLM's without the connector under the same limits."""
    same_runtime(without_kvtier=baseline["batch"], with_kvtier=default_run)
    reference = baseline["batch"].tokens(0)
    assert default_run.tokens(3) == reference
    assert default_run.tokens(4) == reference
    assert default_run.cached(4) == [4 * CHUNK] * 4


def test_layerwise_over_the_socket_with_separate_processes(
    model: str, baseline: dict[str, Run]
) -> None:
    """vLLM's multiprocess executor (scheduler and worker in different processes, lookups over
    the socket; the connector named by module path) with layerwise saves and loads: the warm
    request hits and both outputs equal vLLM's without kvtier."""
    connector = {
        **with_settings(use_layerwise=True),
        "kv_connector_module_path": "kvtier.vllm.connector",
    }
    got = run(model, [Step([TWICE]), Step([TWICE])], connector, in_process=False)
    same_runtime(without_kvtier=baseline["twice"], with_kvtier=got)
    assert got.cached(1) == [4 * CHUNK + BLOCK]
    assert got.tokens(0) == got.tokens(1) == baseline["twice"].tokens(0)


def test_bad_setting_stops_vllm_with_kvtier_message(model: str) -> None:
    """A misspelt key in kv_connector_extra_config: vLLM refuses to start, saying which key."""
    proc = launch(model, [Step([[1, 2, 3]])], with_settings(max_local_cpu=1), True, None)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, "vLLM started although it should have refused"
    assert "max_local_cpu" in output
    assert "max_local_cpu_size" in output, output[-3000:]


def test_exhausted_pool_turns_into_misses_not_wrong_tokens(
    model: str, baseline: dict[str, Run]
) -> None:
    """A CPU tier that holds two chunks of this model while prompts need six: saves are dropped
    and lookups miss partly, yet every output equals the run without kvtier."""
    chunk_gb = tiny_model.kv_bytes_per_token(dtype=DTYPE) * CHUNK / 2**30
    settings = with_settings(max_local_cpu_size=2.5 * chunk_gb)
    got = run(model, [Step(EXHAUST), Step(EXHAUST)], settings)
    same_runtime(without_kvtier=baseline["exhaust"], with_kvtier=got)
    reference = baseline["exhaust"].tokens(0)
    assert got.tokens(0) == got.tokens(1) == reference
    assert all(c <= 2 * CHUNK for c in got.cached(1))


@pytest.fixture(scope="module")
def kvtier_server() -> Iterator[str]:
    """kvtier's own cache server on a free port, for the module's tests; yields its URL."""
    port = _free_port()
    command = [str(Path(sys.executable).parent / "kvtier-server"), "--port", str(port)]
    with _server([*command, "--memory-gb", "0.5"], port):
        yield f"kvtier://127.0.0.1:{port}"


def test_disk_and_remote_tiers_serve_a_new_vllm(
    model: str, baseline: dict[str, Run], kvtier_server: str, tmp_path: Path
) -> None:
    """vLLM A, with a disk tier and kvtier's cache server, stores a prompt. A new vLLM B on the
    same disk directory (no remote) loads it from disk; a new vLLM C with an empty disk and the
    cache server loads it from the server. Every output equals vLLM's without kvtier."""

    def disk(name: str) -> dict[str, Any]:
        return {"local_disk": str(tmp_path / name), "max_local_disk_size": 1}

    first = run(model, [Step([DISK])], with_settings(**disk("kv"), remote_url=kvtier_server))
    assert any((tmp_path / "kv").rglob("*.kvc")), "nothing was written to disk"
    elsewhere = with_settings(**disk("empty"), remote_url=kvtier_server)
    both = [start(model, [Step([DISK])], s) for s in (with_settings(**disk("kv")), elsewhere)]
    from_disk, from_remote = (r.result() for r in both)
    same_runtime(
        without_kvtier=baseline["disk"], first=first, from_disk=from_disk, from_remote=from_remote
    )
    assert (first.cached(0), from_disk.cached(0), from_remote.cached(0)) == (
        [0],
        [5 * CHUNK],
        [5 * CHUNK],
    )
    reference = baseline["disk"].tokens(0)
    assert first.tokens(0) == from_disk.tokens(0) == from_remote.tokens(0) == reference


def test_two_vllm_instances_share_prefixes_through_redis(
    model: str, baseline: dict[str, Run]
) -> None:
    """vLLM A stores a prompt in a real redis-server; vLLM B (a new process with empty local
    tiers) loads it from there in the background and generates the same tokens as vLLM without
    kvtier."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    port = _free_port()
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    with _server(command, port):
        settings = with_settings(remote_url=f"redis://127.0.0.1:{port}")
        first = run(model, [Step([REMOTE])], settings)
        second = run(model, [Step([REMOTE])], settings)
    same_runtime(without_kvtier=baseline["remote"], first=first, second=second)
    assert (first.cached(0), second.cached(0)) == ([0], [3 * CHUNK])
    assert first.tokens(0) == second.tokens(0) == baseline["remote"].tokens(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _server:
    """Starts a server process and waits until it accepts connections; stops it on exit."""

    def __init__(self, command: list[str], port: int) -> None:
        self._command, self._port = command, port

    def __enter__(self) -> subprocess.Popen[str]:
        self._proc = subprocess.Popen(
            self._command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        _wait_for_port(self._port, self._proc)
        return self._proc

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=30)


def _wait_for_port(port: int, proc: subprocess.Popen[str]) -> None:
    """Polls until ``port`` accepts a connection; fails (never passes) after 60 s or when the
    server exits."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"{proc.args[0]} exited: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{proc.args[0]} did not listen within 60 s")
