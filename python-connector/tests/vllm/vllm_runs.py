"""Running real vLLM (CPU) in a fresh process per configuration, as the end-to-end tests do.

Each run is ``run_llm.py`` in a new process (a JVM must never be forked, and each kvtier
configuration needs its own engine) with the same threading for every run
(``examples/vllm_cpu.py``) and float32, the dtype in which a different prefill split (a warm request
computes fewer tokens) cannot flip a greedy token. :func:`same_runtime` checks that runs compared
really used the same dtype and threads.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "examples"))

import vllm_cpu  # noqa: E402

CHUNK = 256
DTYPE = "float32"
CONNECTOR = {"kv_connector": "KVTierConnector", "kv_role": "kv_both"}
IN_PROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
"""Scheduler and worker in this run's own process (vLLM's in-process executor): one Python start
instead of three, and the kvtier worker's counters readable. One test covers the multiprocess
executor."""
LIMITS = {"max_num_batched_tokens": 384, "num_gpu_blocks_override": 40, "max_num_seqs": 4}
"""Every run's scheduler limits: a token budget that splits each prefill into steps and a KV cache
of 40 blocks, too small for the batched prompts at once (vLLM preempts)."""


@dataclass
class Step:
    """One step of a run: its prompts (token lists, or run_llm.py's prompt objects) generated one
    at a time or batched, or a cache reset."""

    prompts: list[Any] = field(default_factory=list)
    batch: bool = False
    max_tokens: int = 8
    reset: bool = False


@dataclass
class Run:
    """What one vLLM process generated, and the dtype and threads it really used."""

    steps: list[list[dict[str, Any]]]
    dtype: str
    threads: list[int]
    stats: dict[str, int] = field(default_factory=dict)

    def tokens(self, step: int) -> list[list[int]]:
        return [r["tokens"] for r in self.steps[step]]

    def cached(self, step: int) -> list[int]:
        return [r["cached"] for r in self.steps[step]]


def run(
    model: str,
    steps: list[Step],
    connector: dict[str, Any] | None,
    in_process: bool = True,
    llm: dict[str, Any] | None = None,
    loras: dict[str, Any] | None = None,
) -> Run:
    """Runs vLLM once over ``steps``; fails with vLLM's stderr when the process fails.
    ``loras`` names LoRA adapters for the prompts: ``{name: [int id, path]}``."""
    return start(model, steps, connector, in_process, llm, loras).result()


class Started:
    """A run started by :func:`start`: vLLM starts at once, its steps wait for :meth:`result`.

    Runs started together start side by side (a start is mostly imports on one core); their
    steps run one run at a time, and only once every run started so far is up, so no run's
    steps share the cores with another's start or steps (hits that depend on how long a save
    takes stay what they would be alone)."""

    _waiting: ClassVar[list[Started]] = []

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self._out = tempfile.TemporaryFile("w+")
        self._err = tempfile.TemporaryFile("w+")
        ready_r, ready_w = os.pipe()
        env = {**env, "KVTIER_TEST_GATE_FD": str(ready_w)}
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=self._out,
            stderr=self._err,
            text=True,
            env=env,
            pass_fds=(ready_w,),
        )
        os.close(ready_w)
        self._ready = os.fdopen(ready_r, "rb")
        self._up = False
        Started._waiting.append(self)

    def _wait_up(self) -> None:
        """Returns once vLLM is up and waits at the gate, or the process ended."""
        if not self._up:
            readable, _, _ = select.select([self._ready], [], [], TIMEOUT_S)
            if readable:
                self._ready.readline()  # b"" when the process ended first
            self._ready.close()
            self._up = True

    def result(self) -> Run:
        """Lets the run's steps go (once every run started so far is up) and returns what it
        generated; fails with vLLM's stderr when the process fails."""
        for other in list(Started._waiting):
            other._wait_up()
        if self in Started._waiting:
            Started._waiting.remove(self)
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write("go\n")
            self._proc.stdin.close()
        except BrokenPipeError:  # it ended already: its stderr says why
            pass
        try:
            self._proc.wait(timeout=TIMEOUT_S)
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
        stdout, stderr = self._read(self._out), self._read(self._err)
        assert self._proc.returncode == 0, f"vLLM run failed:\n{stderr[-6000:]}"
        line = next(x for x in reversed(stdout.splitlines()) if x.startswith('{"steps"'))
        result = json.loads(line)
        return Run(result["steps"], result["dtype"], result["threads"], result["kvtier"])

    def stop(self) -> None:
        """Stops a run whose result nobody asked for."""
        if self in Started._waiting:
            Started._waiting.remove(self)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    @staticmethod
    def _read(f: Any) -> str:
        f.seek(0)
        text = str(f.read())
        f.close()
        return text


TIMEOUT_S = 900


@atexit.register
def _stop_unasked() -> None:
    for started in list(Started._waiting):
        started.stop()


def start(
    model: str,
    steps: list[Step],
    connector: dict[str, Any] | None,
    in_process: bool = True,
    llm: dict[str, Any] | None = None,
    loras: dict[str, Any] | None = None,
) -> Started:
    """Starts vLLM for :func:`run`'s arguments; its steps run at :meth:`Started.result`."""
    return Started(*_command(model, steps, connector, in_process, llm, loras))


def launch(
    model: str,
    steps: list[Step],
    connector: dict[str, Any] | None,
    in_process: bool,
    llm: dict[str, Any] | None,
    loras: dict[str, Any] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs vLLM over ``steps`` with no gate, whatever happens (for a start that must fail)."""
    command, env = _command(model, steps, connector, in_process, llm, loras)
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


def _command(
    model: str,
    steps: list[Step],
    connector: dict[str, Any] | None,
    in_process: bool,
    llm: dict[str, Any] | None,
    loras: dict[str, Any] | None,
) -> tuple[list[str], dict[str, str]]:
    spec = {
        "model": model,
        "loras": loras or {},
        "dtype": DTYPE,
        "connector": connector,
        "steps": [
            {"reset": True}
            if s.reset
            else {"prompts": s.prompts, "batch": s.batch, "max_tokens": s.max_tokens}
            for s in steps
        ],
        "llm": {**LIMITS, **(llm or {})},
    }
    env = {**os.environ, **vllm_cpu.vllm_env()}
    env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # run_llm asks the workers for their threads
    if in_process:
        env.update(IN_PROCESS_ENV)
    return [sys.executable, str(HERE / "run_llm.py"), json.dumps(spec)], env


def same_runtime(**runs: Run) -> None:
    """Fails, naming each run's dtype and threads, unless the runs compared used the same."""
    vllm_cpu.check_same_runtime(
        {
            name.replace("_", " "): {"dtype": r.dtype, "threads": r.threads}
            for name, r in runs.items()
        }
    )


def with_settings(**settings: Any) -> dict[str, Any]:
    return {**CONNECTOR, "kv_connector_extra_config": settings}
