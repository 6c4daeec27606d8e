"""Faults from outside, as an operator meets them, on a real ``vllm serve`` (CPU, float32) with
kvtier's three tiers: a small CPU tier, a disk tier on a small tmpfs, and kvtier's cache server as
the remote.

One vLLM server and one cache server are shared by the faults (each test restores what it broke);
the last test kills vLLM with ``kill -9`` and starts it again on the same disk. The first test,
before any fault, checks kvtier's series on ``/metrics`` against what the responses reported (the
counts the faults are judged by), and the restarted server's first hit against them again, from
disk. Every test asks its own prompts, first with no fault (the reference answer), then with the
fault, then after it, and asserts: vLLM stays up, every answer equals the reference, the fault is
counted under its kind on ``/metrics``, and the tier recovers (saves resume, hits from it return).

In float32 a prompt's greedy tokens do not depend on how much of it came from a cache (the
end-to-end tests compare kvtier's cold, warm and partial hits with vLLM without kvtier under the
same threading), so the reference is the prompt's first, cold answer from the same server.

Which tier serves a hit is steered, not left to chance: vLLM's own prefix cache is reset between
the asks (``/reset_prefix_cache``), and fresh "filler" prompts push a prompt's chunks out of
kvtier's CPU tier (LRU, 4 chunks) or out of its CPU and disk tiers, leaving them in the remote.
Counters reach ``/metrics`` with vLLM's steps, so waits send tiny prompts (shorter than a block:
they store nothing) while they poll.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "vllm", reason="vLLM (CPU) is not installed; scripts/lib/vllm-env.sh installs it"
)
psutil = pytest.importorskip("psutil", reason="psutil comes with vLLM")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).parents[3]
sys.path.insert(0, str(ROOT / "examples"))

import tiny_model  # noqa: E402
import vllm_cpu  # noqa: E402
import vllm_server  # noqa: E402
from cache_server import free_port, start_server  # noqa: E402
from waiting import wait_until  # noqa: E402

from kvtier.vllm.stats import METRICS  # noqa: E402

DTYPE = "float32"
SPEC = tiny_model.SMALL
CHUNK = 256
PER_TOKEN = tiny_model.kv_bytes_per_token(SPEC, DTYPE)
CHUNK_BYTES = CHUNK * PER_TOKEN
"""1 MiB: one chunk of this model's float32 KV cache."""
PROMPT_TOKENS = 2 * CHUNK + 20
"""Two whole chunks, which kvtier stores, and a tail shorter than a block, which it does not."""
CPU_CHUNKS = 4
TMPFS_MIB = 10
"""The disk tier's file system: room for 9 chunks, under a configured budget of 1 GB."""
DISK_CHUNKS = 9
"""The disk budget where no tmpfs can be mounted (not root): the same room, as a budget (each file
is a chunk and its header)."""
REMOTE_TIMEOUT_MS = 1000
"""kvtier's default: a shorter one times out on a loaded 2-core machine with no fault at all."""
TIERS = ("cpu", "disk", "remote")
FROZEN_PROMPTS = 6


class Stack:
    """The cache server, the disk tier's directory and the vLLM server, with what the tests ask."""

    def __init__(self, base: Path, exits: ExitStack) -> None:
        self.base, self.exits = base, exits
        self.model = str(tiny_model.build(spec=SPEC))
        self.references: dict[tuple[int, ...], list[int]] = {}
        self.seed = 1000
        self.disk_root = base / "disk"
        self.disk_root.mkdir()
        self.tmpfs = _mount_tmpfs(self.disk_root, TMPFS_MIB)
        if self.tmpfs:
            exits.callback(subprocess.run, ["umount", "-l", str(self.disk_root)], check=False)
        self.disk = self.disk_root / "kv"
        self.runtime = Path(tempfile.mkdtemp(prefix="kvf"))  # a socket path holds 107 bytes
        exits.callback(shutil.rmtree, self.runtime, ignore_errors=True)
        self.port, self.stats_port = free_port(), free_port()
        self.cache_server: subprocess.Popen[str] | None = None
        self.start_cache_server()
        exits.callback(self.stop_cache_server)
        self.settings = {
            "max_local_cpu_size": CPU_CHUNKS * CHUNK_BYTES / 2**30,
            "lmcache.cache_policy": "LRU",  # LMCache's prefix, as its users write it
            "local_disk": str(self.disk),
            "max_local_disk_size": 1 if self.tmpfs else DISK_CHUNKS * (CHUNK_BYTES + 2**16) / 2**30,
            "remote_url": f"kvtier://127.0.0.1:{self.port}",
        }
        # The remote timeout and a capability kvtier lacks come from LMCache's configuration file,
        # as an LMCache user's environment has it.
        self.lmcache_file = base / "lmcache.yaml"
        self.lmcache_file.write_text(
            f"blocking_timeout_secs: {REMOTE_TIMEOUT_MS // 1000}\nenable_p2p: true\n"
        )
        self.vllm_exits: ExitStack | None = None
        self.vllm: vllm_server.Server
        self.start_vllm()
        exits.callback(self.stop_vllm)

    # ---- processes

    def start_cache_server(self) -> None:
        log = self.base / f"cache-server-{time.monotonic_ns()}.log"
        self.cache_server = start_server(
            self.port, "0.25", "--stats-port", str(self.stats_port), log=log
        )

    def stop_cache_server(self) -> None:
        proc = self.cache_server
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
            proc.terminate()
            proc.wait(timeout=60)

    def start_vllm(self) -> None:
        self.vllm_exits = ExitStack()
        args = ["--block-size", "32", "--max-model-len", "1024"]
        args += ["--kv-cache-memory-bytes", str(64 << 20)]
        env = {"KVTIER_RUNTIME_DIR": str(self.runtime), "VLLM_SERVER_DEV_MODE": "1"}
        env["LMCACHE_CONFIG_FILE"] = str(self.lmcache_file)
        env["VLLM_LOG_STATS_INTERVAL"] = "1"  # vLLM's stats line, with kvtier's figures
        self.vllm = self.vllm_exits.enter_context(
            vllm_server.serve(
                self.model, dtype=DTYPE, connector=self.settings, args=args, env=env,
                log_dir=self.base,
            )
        )  # fmt: skip

    def stop_vllm(self) -> None:
        if self.vllm_exits is not None:
            self.vllm_exits.close()
            self.vllm_exits = None

    def kill_vllm(self) -> None:
        """``kill -9`` of vLLM's every process (API server, engine core, with kvtier's JVM)."""
        root = psutil.Process(self.vllm.proc.pid)
        for p in [*root.children(recursive=True), root]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.vllm.proc.wait(timeout=60)
        self.stop_vllm()

    # ---- requests

    def complete(self, prompt: list[int], max_tokens: int = 4) -> tuple[list[int], int]:
        """One greedy completion: its tokens and the cached prompt tokens its usage reported."""
        body = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "return_token_ids": True,
        }
        out = _post(f"{self.vllm.url}/v1/completions", body)
        usage = out["usage"]
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        return list(out["choices"][0]["token_ids"]), cached

    def new_prompt(self) -> list[int]:
        self.seed += 1
        return tiny_model.prompt(PROMPT_TOKENS, seed=self.seed, spec=SPEC)

    def ask_new(self, tiers: tuple[str, ...] = TIERS) -> list[int]:
        """A prompt no one asked before, asked once: its answer is the reference. Waits until its
        two chunks are in ``tiers`` (those a fault leaves up)."""
        prompt = self.new_prompt()
        before = self.puts()
        tokens, cached = self.complete(prompt)
        assert cached == 0, "a new prompt has no hit"
        self.references[tuple(prompt)] = tokens
        self.wait(
            lambda: all(self.puts()[t] >= before[t] + 2 for t in tiers),
            f"the prompt saved in {', '.join(tiers)}",
        )
        return prompt

    def ask_again(self, prompt: list[int]) -> int:
        """Asks ``prompt`` again after vLLM's own prefix cache is emptied; asserts the answer
        equals the reference and vLLM lives; returns the hit tokens the response reported."""
        self.reset_vllm_cache()
        tokens, cached = self.complete(prompt)
        assert tokens == self.references[tuple(prompt)], "an answer differs from the reference"
        assert self.vllm.alive()
        return cached

    def poke(self) -> None:
        """A prompt shorter than a block (it stores nothing): makes vLLM step, and with its step
        report kvtier's counters."""
        self.complete(tiny_model.prompt(8, seed=random.randrange(1 << 30), spec=SPEC), 1)

    def reset_vllm_cache(self) -> None:
        request = urllib.request.Request(f"{self.vllm.url}/reset_prefix_cache", method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200

    def evict_cpu(self, tiers: tuple[str, ...] = TIERS) -> None:
        """Fresh prompts that push every earlier chunk out of kvtier's CPU tier (LRU)."""
        for _ in range(CPU_CHUNKS // 2):
            self.ask_new(tiers)

    def evict_local(self) -> None:
        """Fresh prompts that push every earlier chunk out of the CPU and disk tiers (the disk
        evicts its oldest first), leaving them in the remote."""
        for _ in range(DISK_CHUNKS // 2 + 1):
            self.ask_new()

    def wait_for_remote_saves(self) -> None:
        """Asks new prompts until one's chunks reach the remote: the tier reconnects by itself in
        the background (within its back-off, at most 2 s) and its breaker lets a probe through
        after its pause; saves meanwhile are dropped and counted."""
        puts = self.puts()["remote"]
        self.wait(
            lambda: self.puts()["remote"] > puts,
            "saves reach the remote again",
            poke=lambda: self.ask_new(tiers=("cpu",)),
        )

    def check_remote_serves(self) -> None:
        """Saves reach the remote and hits come from it: a new prompt, pushed out of the CPU and
        disk tiers, is answered from the remote."""
        self.wait_for_remote_saves()
        prompt = self.ask_new()
        self.evict_local()
        hits = self.hits("remote")
        assert self.ask_again(prompt) > 0
        assert self.hits("remote") > hits, "no hit from the remote"

    # ---- what kvtier counted

    def metric(self, name: str, **labels: str) -> float:
        return self.vllm.metric(name, **labels)

    def puts(self) -> dict[str, float]:
        return {
            tier: self.metric("kvtier_tier_puts_total", tier=tier)
            for tier in ("cpu", "disk", "remote")
        }

    def errors(self, tier: str, kind: str) -> float:
        return self.metric("kvtier_errors_total", tier=tier, kind=kind)

    def error_series(self) -> dict[tuple[str, str], float]:
        """Every non-zero ``kvtier_errors_total`` series, by (tier, kind)."""
        return {
            (labels.get("tier", ""), labels.get("kind", "")): value
            for name, labels, value in self.vllm.metrics()
            if name == "kvtier_errors_total" and value
        }

    def kvtier_log_lines(self) -> str:
        """vLLM's log lines that speak of kvtier (warnings and errors included)."""
        return "\n".join(
            line for line in self.vllm.log_text().splitlines() if "kvtier" in line.lower()
        )

    def failed_disk_tokens(self) -> float:
        return self.metric("kvtier_failed_load_tokens_total", source="disk")

    def hits(self, source: str) -> float:
        return self.metric("kvtier_hit_tokens_total", source=source)

    def wait(
        self,
        condition: Callable[[], bool],
        what: str,
        poke: Callable[[], object] | None = None,
        timeout_s: float = 120,
    ) -> None:
        """Polls ``condition`` (on /metrics), making vLLM step between polls with ``poke`` (by
        default a prompt shorter than a block)."""

        def poked() -> bool:
            if condition():
                return True
            (poke or self.poke)()
            return False

        wait_until(poked, what, timeout_s)

    def server_metric(self, name: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.stats_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name
        )

    def disk_files(self) -> set[Path]:
        return set(self.disk.rglob("*.kvc")) if self.disk.is_dir() else set()


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def _mount_tmpfs(path: Path, mib: int) -> bool:
    """Mounts a tmpfs of ``mib`` MiB on ``path``; False where this process may not (not root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    options = f"size={mib}m,mode=0700"
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "kvtier-faults", str(path)],
        capture_output=True,
        text=True,
    )
    return r.returncode == 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path_factory.mktemp("faults"), exits)


def test_before_any_fault_kvtiers_series_equal_what_the_responses_reported(stack: Stack) -> None:
    """The counts every fault below is judged by, on the fresh server: a prompt asked twice (the
    second time after vLLM's own prefix cache is emptied, so every cached token is kvtier's) hits
    kvtier's CPU tier; kvtier's hit tokens equal the cached tokens the response reported and
    vLLM's own ``prompt_tokens_cached_by_source``; tokens and bytes loaded and saved follow the
    model's bytes per token; the tiers' series show what they hold."""
    prompt = stack.ask_new()  # waits until its 2 chunks are in every tier
    cached = stack.ask_again(prompt)
    assert cached == 2 * CHUNK, "both whole chunks, from the CPU tier"
    names = {name for name, _, _ in stack.vllm.metrics()}
    assert {n for n in METRICS if METRICS[n].kind == "counter"} & {
        n.removesuffix("_total") for n in names
    }, "no kvtier series on /metrics"
    assert stack.hits("cpu") == stack.metric("kvtier_hit_tokens_total") == cached
    assert stack.metric("vllm:prompt_tokens_cached_by_source_total", source="host") == cached
    assert stack.metric("kvtier_lookups_total") == 2
    assert stack.metric("kvtier_lookup_tokens_total") == 2 * PROMPT_TOKENS
    # once per admission; a request looked up again before it is admitted is timed again
    assert stack.metric("kvtier_lookup_seconds_count") >= 2
    assert stack.metric("kvtier_loaded_tokens_total") == cached
    assert stack.metric("kvtier_loaded_bytes_total") == cached * PER_TOKEN
    assert stack.metric("kvtier_load_seconds_count") == 1
    assert stack.metric("kvtier_saved_bytes_total") == 2 * CHUNK_BYTES
    assert stack.metric("kvtier_save_seconds_count") >= 1
    assert stack.puts() == {"cpu": 2, "disk": 2, "remote": 2}
    assert stack.metric("kvtier_tier_bytes", tier="cpu", rank="0") == 2 * CHUNK_BYTES
    assert stack.metric("kvtier_tier_chunks", tier="disk", rank="0") == 2
    assert stack.metric("kvtier_failed_loads_total") == 0
    assert stack.metric("kvtier_dropped_saves_total") == 0
    assert stack.error_series() == {}, "kvtier's log lines:\n" + stack.kvtier_log_lines()
    wait_until(
        lambda: re.search(r"KV Transfer metrics: .*hit_tokens_cpu=", stack.vllm.log_text()),
        "vLLM's stats log line shows kvtier's hits",
    )
    log = stack.vllm.log_text()
    mib = CHUNK_BYTES / 2**20
    assert f"kvtier: rank 0 CPU tier: 0.00 GiB ({CPU_CHUNKS} chunks of {mib:.1f} MiB)" in log
    assert f"kvtier: rank 0 remote tier: kvtier://127.0.0.1:{stack.port}" in log
    # LMCache's file and prefix, read as LMCache reads them; what kvtier lacks said once
    source = f"file {stack.lmcache_file} (LMCACHE_CONFIG_FILE), as blocking_timeout_secs"
    assert f"remote_timeout_ms          = {REMOTE_TIMEOUT_MS}  ({source})" in log
    assert "cache_policy               = LRU  (kv_connector_extra_config)" in log
    p2p = [line for line in log.splitlines() if "LMCache's enable_p2p=true" in line]
    assert len(p2p) == 1 and p2p[0].startswith("WARNING: "), p2p


def test_the_disk_budget_follows_the_file_system_and_a_filled_disk_evicts(stack: Stack) -> None:
    """A file system smaller than the budget, then filled by someone else: the tier holds what
    the file system can, keeps saving the newest chunks by evicting its oldest, and holds more
    again once the space comes free."""
    if not stack.tmpfs:
        pytest.skip("no tmpfs could be mounted (needs root): the disk-full fault is not run")
    assert "max_local_disk_size is more than the disk holds" in stack.vllm.log_text()
    seen = stack.disk_files()
    stack.ask_new()
    oldest = stack.disk_files() - seen

    ballast = stack.disk_root / "ballast"  # another program fills the disk to its last chunk
    free = shutil.disk_usage(stack.disk_root).free
    ballast.write_bytes(b"\0" * max(free - CHUNK_BYTES - CHUNK_BYTES // 2, 0))
    try:
        full = stack.errors("disk", "disk_full")
        for _ in range(3):
            seen = stack.disk_files()
            stack.ask_new()  # waits until its chunks are on disk: saving goes on
        newest = stack.disk_files() - seen
        assert stack.errors("disk", "disk_full") > full, "the full disk counted"
        assert len(newest) == 2 and all(f.exists() for f in newest), "the newest chunks kept"
        assert not any(f.exists() for f in oldest), "the oldest evicted to make room"
        held = stack.metric("kvtier_tier_chunks", tier="disk")
    finally:
        ballast.unlink()
    prompt = stack.ask_new()
    stack.evict_cpu()
    assert stack.metric("kvtier_tier_chunks", tier="disk") > held, "more held once space is free"
    hits = stack.hits("disk")
    assert stack.ask_again(prompt) > 0
    assert stack.hits("disk") > hits, "hits from the disk"


def test_a_read_only_disk_still_serves_and_saving_resumes(stack: Stack) -> None:
    """The disk's file system turns read-only: its chunks are still read, writes are refused and
    counted, and saving resumes once it can be written again."""
    if not stack.tmpfs:
        pytest.skip("no tmpfs could be mounted (needs root): the read-only fault is not run")
    prompt = stack.ask_new()
    stack.evict_cpu()
    subprocess.run(["mount", "-o", "remount,ro", str(stack.disk_root)], check=True)
    try:
        hits = stack.hits("disk")
        assert stack.ask_again(prompt) > 0
        assert stack.hits("disk") > hits, "a read-only disk still serves its chunks"
        refused = stack.errors("disk", "read_only")
        stack.ask_new(tiers=("cpu", "remote"))
        stack.wait(lambda: stack.errors("disk", "read_only") > refused, "the refused write counted")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(stack.disk_root)], check=True)
    stack.ask_new()  # waits until its chunks are on disk
    assert stack.vllm.alive()


def test_the_cache_directory_deleted_while_serving(stack: Stack) -> None:
    """``rm -rf`` of the disk tier's directory: the first load that misses a file drops every
    chunk of the vanished directory at once and takes the missing chunks from the remote's copies,
    no later lookup offers a forgotten chunk, and the tier saves and serves again."""
    seen = stack.disk_files()
    prompt = stack.ask_new()
    files = stack.disk_files() - seen
    stack.evict_cpu()  # waits until every write is on disk: none makes the directory again
    assert files and all(f.exists() for f in files), "the prompt is on disk"
    shutil.rmtree(stack.disk)
    missing, failed = stack.errors("disk", "file_missing"), stack.failed_disk_tokens()
    assert stack.ask_again(prompt) > 0
    stack.wait(lambda: stack.errors("disk", "file_missing") > missing, "the missing file counted")
    assert stack.failed_disk_tokens() == failed, "the remote's copies filled the load"
    stack.wait(  # the recomputed chunks may be saved again, in the directory made anew
        lambda: stack.metric("kvtier_tier_chunks", tier="disk") == len(stack.disk_files()),
        "the vanished directory's chunks forgotten: the tier offers only files that exist",
    )
    missing = stack.errors("disk", "file_missing")
    assert stack.ask_again(prompt) > 0, "a hit again, from whichever tier holds the prompt"
    assert stack.errors("disk", "file_missing") == missing, "no failure per forgotten chunk"

    later = stack.ask_new()
    stack.evict_cpu()
    hits = stack.hits("disk")
    assert stack.ask_again(later) > 0
    assert stack.hits("disk") > hits, "the disk tier saves and serves again"


def test_the_cache_server_killed_and_restarted(stack: Stack) -> None:
    """``kill -9`` of the cache server: saves to it fail fast and are counted, requests go on
    from the local tiers; after its restart (empty) saves reach it and hits from it return."""
    before = stack.ask_new()
    assert stack.cache_server is not None
    stack.cache_server.kill()
    stack.cache_server.wait()
    unavailable = stack.errors("remote", "unavailable")
    during = stack.ask_new(tiers=("cpu", "disk"))
    stack.wait(
        lambda: stack.errors("remote", "unavailable") > unavailable, "the dead server counted"
    )
    stack.ask_new(tiers=("cpu", "disk"))  # with ``during``, pushes ``before`` out of the CPU tier
    hits = stack.hits("disk")
    assert stack.ask_again(before) > 0
    assert stack.hits("disk") > hits, "the disk serves while the remote is down"

    stack.start_cache_server()
    stack.check_remote_serves()
    assert stack.ask_again(during) == 0, "saved while the server was dead: nowhere now"


def test_a_frozen_cache_server_costs_one_timeout_not_one_per_request(stack: Stack) -> None:
    """SIGSTOP of the cache server (it keeps its connections and answers nothing): after the
    first timeout kvtier leaves the remote alone for a while, counting the requests it skips;
    after SIGCONT saves reach it and hits from it return."""
    assert stack.cache_server is not None
    timeouts, skipped = stack.errors("remote", "timeout"), stack.errors("remote", "skipped")
    stack.cache_server.send_signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        asked = [stack.ask_new(tiers=("cpu", "disk")) for _ in range(FROZEN_PROMPTS)]
        elapsed = time.monotonic() - start
        stack.wait(lambda: stack.errors("remote", "skipped") > skipped, "skipped requests counted")
        timed_out = stack.errors("remote", "timeout") - timeouts
        assert stack.vllm.alive()
    finally:
        stack.cache_server.send_signal(signal.SIGCONT)
    print(f"frozen remote: {timed_out:.0f} timeouts over {FROZEN_PROMPTS} prompts, {elapsed:.1f} s")
    assert 1 <= timed_out < FROZEN_PROMPTS, f"{timed_out} timeouts in {elapsed:.1f} s"
    stack.check_remote_serves()
    for prompt in asked:
        stack.ask_again(prompt)


def test_garbage_and_floods_sent_to_the_cache_server(stack: Stack) -> None:
    """Bytes that are no protocol, a frame that claims more than the server accepts, and a flood
    of connections: each gets an error or a closed connection, the server stays up within its
    memory budget, and vLLM's saves and hits through it go on."""
    errors = stack.server_metric("kvtier_server_protocol_errors_total")
    rng = random.Random(7)
    for payload in (
        bytes(rng.randrange(256) for _ in range(4096)),  # noise
        struct.pack("<IBI", 1 << 30, 7, 1),  # a PUT of 1 GiB, far over the largest value
        struct.pack("<IBI", 14, 1, 1) + struct.pack("<IHH", 0x12345678, 1, 0),  # a wrong magic
    ):
        with socket.create_connection(("127.0.0.1", stack.port), timeout=60) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):  # an ERROR frame, then the end of the connection
                pass
    flood = [socket.create_connection(("127.0.0.1", stack.port), timeout=60) for _ in range(200)]
    for s in flood:
        s.sendall(os.urandom(64))
    for s in flood:
        s.close()
    assert stack.server_metric("kvtier_server_protocol_errors_total") >= errors + 3
    assert stack.cache_server is not None and stack.cache_server.poll() is None
    capacity = stack.server_metric("kvtier_server_capacity_bytes")
    assert stack.server_metric("kvtier_server_stored_bytes") <= capacity
    stack.check_remote_serves()


def test_vllm_killed_then_files_corrupted_before_the_next_start(stack: Stack) -> None:
    """``kill -9`` of vLLM (its lookup socket stays behind, a write may be cut short), then one
    chunk file with flipped bytes and one truncated, and the next start with the cache server
    still down: it removes the stale socket and the partial and truncated files (counted), the
    disk serves an intact prompt (the metrics checks again, from disk), a load from the flipped
    file fails its checksum and, with no other copy, its tokens are recomputed (counted), every
    answer equals the reference, and once the cache server is up the remote tier serves."""
    seen = stack.disk_files()
    cut = stack.ask_new()  # waits until its chunks are on disk
    cut_files = stack.disk_files() - seen
    clean = stack.ask_new()  # left as it is: the disk serves it to the next vLLM
    assert stack.cache_server is not None
    stack.cache_server.kill()  # from here on no chunk has a copy in the remote
    stack.cache_server.wait()
    seen = stack.disk_files()
    lonely = stack.ask_new(tiers=("cpu", "disk"))
    lonely_files = stack.disk_files() - seen
    last = stack.ask_new(tiers=("cpu",))  # its disk writes may be under way when vLLM dies
    runtime = stack.vllm.runtime()
    stack.kill_vllm()

    sockets = list(stack.runtime.glob("kvtier-*.sock"))
    assert sockets, "kill -9 leaves the lookup socket behind"
    old = time.time() - 600  # the next start comes ten minutes later
    for s in sockets:
        os.utime(s, (old, old), follow_symlinks=False)
    flipped = sorted(lonely_files)[0]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    truncated = sorted(cut_files)[0]
    truncated.write_bytes(truncated.read_bytes()[: CHUNK_BYTES // 3])
    partial = truncated.with_name(truncated.name + ".0123456789abcdef.tmp")
    partial.write_bytes(b"\1" * 4096)  # what a write cut short by the kill leaves
    partials = len(list(stack.disk.rglob("*.tmp")))

    stack.start_vllm()  # with its remote unreachable from the start
    vllm_cpu.check_same_runtime({"first vLLM": runtime, "restarted vLLM": stack.vllm.runtime()})
    assert not any(s.exists() for s in sockets), "the stale socket removed at start"
    assert not list(stack.disk.rglob("*.tmp")), "partial files removed at start"
    assert not truncated.exists(), "the truncated file removed at start"
    assert stack.metric("kvtier_hit_tokens_total") == 0
    cached = stack.ask_again(clean)
    assert cached == 2 * CHUNK, "the disk tier serves the prompt after a restart"
    assert stack.hits("disk") == cached and stack.hits("cpu") == 0
    assert stack.metric("vllm:prompt_tokens_cached_by_source_total", source="disk") == cached
    assert stack.metric("kvtier_loaded_bytes_total") == cached * PER_TOKEN
    stack.ask_again(lonely)  # a hit or not, by which chunk was flipped: the same answer
    stack.ask_again(cut)  # up to its truncated chunk, if that was not its first
    stack.ask_again(last)  # wherever its chunks got before the kill
    stack.wait(lambda: stack.failed_disk_tokens() > 0, "the flipped chunk's tokens recomputed")
    # the truncated file when the tier opened, the flipped one when it was read
    assert stack.errors("disk", "corrupt_file") == 2
    assert stack.errors("disk", "partial_file") == partials
    assert not flipped.exists() or flipped.read_bytes() != bytes(data), (
        "the corrupt file deleted (the recomputed chunk may have been saved there since)"
    )
    hit = stack.metric("kvtier_hit_tokens_total")
    failed = stack.metric("kvtier_failed_load_tokens_total")
    assert stack.metric("kvtier_loaded_tokens_total") == hit - failed
    assert stack.errors("remote", "unavailable") > 0, "the unreachable remote counted"

    stack.start_cache_server()  # empty: what the prompts left is on disk only
    stack.check_remote_serves()
