"""End to end with real vLLM on CPU: greedy outputs with a warm kvtier cache equal cold ones.

Each scenario starts vLLM in a fresh process (``run_llm.py``) with the small local model, prompts
given as token ids, vLLM's own prefix cache off (so every hit is kvtier's), and compares the
generated tokens of cold and warm requests and of runs without the connector.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
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

CHUNK = 256
CONNECTOR = {"kv_connector": "KVTierConnector", "kv_role": "kv_both"}
IN_PROCESS = {"distributed_executor_backend": "uni"}
IN_PROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


@pytest.fixture(scope="session")
def model() -> str:
    return str(tiny_model.build())


def run(
    model: str,
    prompts: list[list[int]],
    connector: dict[str, Any] | None,
    rounds: int = 1,
    env: dict[str, str] | None = None,
    batch: bool = False,
    max_tokens: int = 8,
    stats: dict[str, int] | None = None,
    llm: dict[str, Any] | None = None,
    expect_failure: bool = False,
) -> Any:
    spec = {
        "model": model,
        "prompts": prompts,
        "connector": connector,
        "rounds": rounds,
        "batch": batch,
        "max_tokens": max_tokens,
        "llm": llm or {},
    }
    proc = subprocess.run(
        [sys.executable, str(HERE / "run_llm.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    if expect_failure:
        assert proc.returncode != 0, "vLLM started although it should have refused"
        return proc.stdout + proc.stderr
    assert proc.returncode == 0, f"vLLM run failed:\n{proc.stderr[-6000:]}"
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith('{"rounds"'))
    result = json.loads(line)
    if stats is not None:
        stats.update(result["kvtier"])
    return result["rounds"]


def with_settings(**settings: Any) -> dict[str, Any]:
    return {**CONNECTOR, "kv_connector_extra_config": settings}


@pytest.mark.parametrize("layerwise", [False, True], ids=["whole", "layerwise"])
def test_same_prompt_twice_hits_and_generates_the_same_tokens(model: str, layerwise: bool) -> None:
    """A 4.1-chunk prompt asked twice (scheduler and worker in one process), with whole-chunk or
    layerwise saves and loads: the second request loads 4 chunks from kvtier and its greedy
    output equals the first's."""
    prompt = tiny_model.prompt(4 * CHUNK + 37, seed=1)
    connector = with_settings(use_layerwise=layerwise)
    cold, warm = run(model, [prompt], connector, rounds=2, env=IN_PROCESS_ENV, llm=IN_PROCESS)
    assert cold[0]["cached"] == 0
    assert warm[0]["cached"] == 4 * CHUNK
    assert warm[0]["tokens"] == cold[0]["tokens"]


def test_shared_prefixes_hit_partially_and_match_a_run_without_kvtier(model: str) -> None:
    """Prompts sharing 3 chunks, then differing: later prompts hit the shared chunks only, and
    every output equals vLLM's without the connector."""
    prefix = tiny_model.prompt(3 * CHUNK, seed=2)
    prompts = [prefix + tiny_model.prompt(n, seed=10 + n) for n in (100, 300, 600)]
    baseline = run(model, prompts, None)[0]
    got = run(model, prompts, CONNECTOR)[0]
    assert [r["cached"] for r in got] == [0, 3 * CHUNK, 3 * CHUNK]
    assert [r["tokens"] for r in got] == [r["tokens"] for r in baseline]


def test_separate_scheduler_and_worker_processes_look_up_over_the_socket(model: str) -> None:
    """vLLM's multiprocess executor (scheduler and worker in different processes; the connector
    named by module path): the warm request still hits, with identical output."""
    connector = {
        "kv_connector": "KVTierConnector",
        "kv_role": "kv_both",
        "kv_connector_module_path": "kvtier.vllm.connector",
    }
    prompt = tiny_model.prompt(3 * CHUNK + 5, seed=3)
    cold, warm = run(
        model, [prompt], connector, rounds=2, llm={"distributed_executor_backend": "mp"}
    )
    assert warm[0]["cached"] == 3 * CHUNK
    assert warm[0]["tokens"] == cold[0]["tokens"]


def test_disk_tier_hits_survive_a_vllm_restart(model: str, tmp_path: Path) -> None:
    """vLLM with CPU and disk tiers stores a prompt; a new vLLM process on the same directory
    loads it from disk (in the background) and generates the same tokens."""
    prompt = tiny_model.prompt(5 * CHUNK + 11, seed=4)
    settings = with_settings(local_disk=str(tmp_path / "kv"), max_local_disk_size=1)
    first = run(model, [prompt], settings)[0]
    assert any((tmp_path / "kv").rglob("*.kvc")), "nothing was written to disk"
    second = run(model, [prompt], settings)[0]
    assert first[0]["cached"] == 0
    assert second[0]["cached"] == 5 * CHUNK
    assert second[0]["tokens"] == first[0]["tokens"]


def test_bad_setting_stops_vllm_with_kvtier_message(model: str) -> None:
    """A misspelt key in kv_connector_extra_config: vLLM refuses to start, saying which key."""
    output = run(model, [[1, 2, 3]], with_settings(max_local_cpu=1), expect_failure=True)
    assert "max_local_cpu" in output
    assert "max_local_cpu_size" in output, output[-3000:]


def test_exhausted_pool_turns_into_misses_not_wrong_tokens(model: str) -> None:
    """A CPU tier that holds two chunks of this model while prompts need six: saves are dropped
    and lookups miss partly, yet every output equals the run without kvtier."""
    prompts = [tiny_model.prompt(6 * CHUNK + 3, seed=s) for s in (5, 6)]
    baseline = run(model, prompts, None)[0]
    chunk_gb = tiny_model.kv_bytes_per_token() * CHUNK / 2**30
    got = run(model, prompts, with_settings(max_local_cpu_size=2.5 * chunk_gb), rounds=2)
    for rnd in got:
        assert [r["tokens"] for r in rnd] == [r["tokens"] for r in baseline]
    assert all(r["cached"] <= 2 * CHUNK for r in got[1])


def test_chunked_prefill_and_preemption_keep_outputs_identical(model: str) -> None:
    """Four prompts at once in a KV cache too small for all of them (vLLM preempts) and a token
    budget that splits every prefill into steps: the second round hits every saved chunk and all
    outputs equal vLLM's without the connector under the same limits."""
    prompts = [tiny_model.prompt(4 * CHUNK + 60, seed=20 + i) for i in range(4)]
    limits = {"max_num_batched_tokens": 384, "num_gpu_blocks_override": 40, "max_num_seqs": 4}
    baseline = run(model, prompts, None, batch=True, max_tokens=48, llm=limits)[0]
    cold, warm = run(model, prompts, CONNECTOR, rounds=2, batch=True, max_tokens=48, llm=limits)
    assert [r["tokens"] for r in cold] == [r["tokens"] for r in baseline]
    assert [r["tokens"] for r in warm] == [r["tokens"] for r in baseline]
    assert [r["cached"] for r in warm] == [4 * CHUNK] * 4


@pytest.mark.parametrize("store", ["kvtier-server", "redis"])
def test_two_vllm_instances_share_prefixes_through_a_remote_store(model: str, store: str) -> None:
    """vLLM A stores a prompt in a remote store (kvtier's cache server, or a real redis-server);
    vLLM B (a new process with empty local tiers) loads it from there in the background and
    generates the same tokens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if store == "redis":
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
        url = f"redis://127.0.0.1:{port}"
    else:
        command = [str(Path(sys.executable).parent / "kvtier-server"), "--port", str(port)]
        command += ["--memory-gb", "0.5"]
        url = f"kvtier://127.0.0.1:{port}"
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_port(port, server)
        settings = with_settings(remote_url=url)
        prompt = tiny_model.prompt(3 * CHUNK + 20, seed=30)
        first = run(model, [prompt], settings)[0]
        second = run(model, [prompt], settings)[0]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert first[0]["cached"] == 0
    assert second[0]["cached"] == 3 * CHUNK
    assert second[0]["tokens"] == first[0]["tokens"]


def _wait_for_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"kvtier-server exited: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("kvtier-server did not listen within 60 s")
