"""A busy vLLM server (CPU) with and without kvtier, measured by vLLM's own benchmark client.

    python benchmarks/load_bench.py [--repeats 3] [--num-prompts 160] [--dtype float32]
                                    [--configs without-kvtier kvtier-cpu kvtier-cpu-disk]

Workload (vLLM's ``prefix_repetition`` dataset, ``vllm.benchmarks.serve`` run in this process
against a ``vllm serve`` started per run): 8 shared prefixes of 1536 tokens, each request with its
own 200-token suffix, 16 output tokens, 160 prompts, 8 at a time, greedy. vLLM's KV cache is
smaller than the concurrent working set (``--block-size 32 --num-gpu-blocks-override 300``: 9600
tokens for 8 requests of 1752), with its prefix cache on (its default): requests wait for blocks
and prefixes fall out of vLLM's cache, where kvtier can serve them.

Each configuration is a fresh server per run with the same threading and dtype
(``examples/vllm_cpu.py``); runs alternate between configurations (ABBA...) after one warm-up
run of each that is not counted, so drift weighs on all alike. Prints each run, then per
configuration the medians of request throughput and of TTFT mean, p50 and p99, the failed
requests, and the ratios against the first configuration. A configuration is one entry of
``CONFIGS``: adding another engine or a larger KV cache as a ceiling is one more entry.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import tiny_model  # noqa: E402
import vllm_cpu  # noqa: E402
import vllm_server  # noqa: E402

SERVER_FLAGS = ["--block-size", "32", "--num-gpu-blocks-override", "300", "--max-model-len", "4096"]
SERVER_FLAGS += ["--kv-cache-memory-bytes", str(512 << 20)]


CEILING_FLAGS = ["--num-gpu-blocks-override", "2000", "--kv-cache-memory-bytes", str(1 << 30)]

LMCACHE_VENV = Path(os.environ.get("LMCACHE_VENV", ROOT.parent / "lmcache-env" / "venv"))
"""LMCache 0.5.6 in its own venv beside vLLM's (``benchmarks/lmcache-venv`` makes it)."""


@dataclass(frozen=True)
class Config:
    """One way to serve: kvtier's settings (None: without kvtier), extra server flags and
    environment, and a server it needs beside vLLM (``sidecar``: "lmcache", "kvtier-server" or
    "redis"; "{remote}" in a kvtier setting becomes its URL)."""

    kvtier: dict[str, Any] | None
    flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    sidecar: str | None = None


CONFIGS: dict[str, Config] = {
    "without-kvtier": Config(None),
    "kvtier-cpu": Config({"max_local_cpu_size": 2}),
    # kvtier's JVM and threads confined to the core of vLLM's first OpenMP thread: where they ran
    # before kvtier chose its CPUs (they inherited that thread's binding).
    "kvtier-cpu-core0": Config({"max_local_cpu_size": 2}, env={"KVTIER_CPUS": "0"}),
    # The policy for a prefix whose next chunk another request is saving: never wait for it.
    "kvtier-cpu-nowait": Config({"max_local_cpu_size": 2, "storing_wait_ms": 0}),
    "kvtier-cpu-background": Config({"max_local_cpu_size": 2, "memory_hit_loads": "background"}),
    "kvtier-cpu-disk": Config(
        {"max_local_cpu_size": 0.1, "local_disk": "{disk}", "max_local_disk_size": 2}
    ),
    # A CPU tier too small for the prefixes in front of a remote store on this machine.
    "kvtier-cpu-server": Config(
        {"max_local_cpu_size": 0.1, "remote_url": "{remote}"}, sidecar="kvtier-server"
    ),
    "kvtier-cpu-redis": Config(
        {"max_local_cpu_size": 0.1, "remote_url": "{remote}"}, sidecar="redis"
    ),
    # LMCache 0.5.6 in its multi-process mode: its server holds a 2 GB CPU L1 in shared memory.
    "lmcache": Config(None, sidecar="lmcache"),
    # The ceiling: vLLM alone with a KV cache that holds every prefix and request at once.
    "ceiling": Config(None, CEILING_FLAGS),
    # kvtier on the ceiling's KV cache: what kvtier costs where nothing needs offloading.
    "kvtier-cpu-ceiling": Config({"max_local_cpu_size": 2}, CEILING_FLAGS),
}
"""Configurations by name; "{disk}" in a setting becomes a fresh directory for each run."""

DEFAULT_CONFIGS = [
    "without-kvtier", "kvtier-cpu", "kvtier-cpu-disk", "kvtier-cpu-server", "kvtier-cpu-redis",
    "lmcache", "ceiling",
]  # fmt: skip

WORKLOADS: dict[str, list[str]] = {
    # 8 prefixes of 1536 tokens shared by 160 requests, 8 at a time: most hits are vLLM's own,
    # kvtier serves the prefixes that fell out of its cache.
    "prefix8": [
        "--prefix-repetition-prefix-len", "1536", "--prefix-repetition-suffix-len", "200",
        "--prefix-repetition-num-prefixes", "8", "--prefix-repetition-output-len", "16",
        "--max-concurrency", "8",
    ],
    # 32 prefixes of 1024 tokens, 16 at a time: the prefixes are 3.4 times vLLM's KV cache, so
    # most hits come from the offload tier, and twice the requests compete for blocks.
    "prefix32-c16": [
        "--prefix-repetition-prefix-len", "1024", "--prefix-repetition-suffix-len", "128",
        "--prefix-repetition-num-prefixes", "32", "--prefix-repetition-output-len", "16",
        "--max-concurrency", "16",
    ],
}  # fmt: skip
"""vLLM's ``prefix_repetition`` dataset, by workload name."""


@contextmanager
def sidecar(kind: str | None, scratch: str) -> Iterator[dict[str, Any]]:
    """Starts the server a configuration needs beside vLLM and yields what vLLM is started with
    ("remote": kvtier's remote_url; "transfer" and "python": LMCache's connector and venv)."""
    if kind is None:
        yield {}
        return
    port = vllm_server.free_port()
    if kind == "kvtier-server":
        # Slots of 4 MiB: this model's chunks are 3 MiB in float32 (12 KiB per token).
        command = [sys.executable, "-m", "kvtier.server", "--port", str(port), "--memory-gb", "2",
                   "--max-value-mb", "4"]  # fmt: skip
        info: dict[str, Any] = {"remote": f"kvtier://127.0.0.1:{port}"}
        env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    elif kind == "redis":
        command = [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--maxmemory", "2gb", "--maxmemory-policy", "allkeys-lru",
        ]  # fmt: skip
        info = {"remote": f"redis://127.0.0.1:{port}"}
        env = dict(os.environ)
    elif kind == "lmcache":
        lmcache = LMCACHE_VENV / "bin" / "lmcache"
        if not lmcache.exists():
            raise SystemExit(
                f"LMCache's venv is not at {LMCACHE_VENV} (LMCACHE_VENV): make it with "
                "benchmarks/lmcache-venv, or leave out the lmcache configuration"
            )
        command = [
            str(lmcache), "server", "--host", "127.0.0.1", "--port", str(port),
            "--chunk-size", "256", "--l1-size-gb", "2", "--no-l1-use-lazy",
            "--eviction-policy", "LRU", "--supported-transfer-mode", "engine_driven",
            "--shm-name", f"lmcache_l1_pool_{port}", "--http-host", "127.0.0.1",
            "--http-port", str(vllm_server.free_port()),
            "--prometheus-port", str(vllm_server.free_port()),
        ]  # fmt: skip
        info = {
            "python": str(LMCACHE_VENV / "bin" / "python"),
            "transfer": {
                "kv_connector": "LMCacheMPConnector",
                "kv_role": "kv_both",
                "kv_connector_module_path": "lmcache.integration.vllm.lmcache_mp_connector",
                "kv_connector_extra_config": {
                    "lmcache.mp.host": "tcp://127.0.0.1",
                    "lmcache.mp.port": port,
                    "lmcache.mp.mp_transfer_mode": "engine_driven",
                },
            },
            "env": {"LMCACHE_TRACK_USAGE": "false", "LMCACHE_DISABLE_BANNER": "1"},
        }
        env = {**os.environ, **info["env"]}
    else:
        raise ValueError(f"unknown sidecar {kind!r}")
    with open(Path(scratch) / f"{kind}.log", "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_for_port(proc, port, Path(scratch) / f"{kind}.log")
        yield info
    finally:
        vllm_server.stop(proc, timeout_s=30)


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Returns once ``port`` accepts connections; raises with the log if ``proc`` exits first."""
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited: {log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port} after 300 s; see {log}") from e
            time.sleep(0.5)


METRICS = ("request_throughput", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms")


def client_args(url: str, model: str, num_prompts: int, workload: str) -> argparse.Namespace:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    return parser.parse_args(
        [
            "--backend", "vllm", "--base-url", url, "--model", model, "--tokenizer", model,
            "--dataset-name", "prefix_repetition", *WORKLOADS[workload],
            "--num-prompts", str(num_prompts), "--seed", "3", "--temperature", "0",
            "--disable-tqdm",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        ]
    )  # fmt: skip


def run_once(
    name: str,
    model: str,
    dtype: str,
    num_prompts: int,
    workload: str = "prefix8",
    profile: Path | None = None,
) -> dict[str, Any]:
    """Serves ``model`` as configuration ``name`` and runs the client once; returns its result
    with "failed" and "engine_alive" set. With ``profile``, the server's processes write where
    their time went (``benchmarks/profiling``) into a fresh directory under it, and the result
    gets a "profile" summary."""
    from vllm.benchmarks.serve import main as bench

    config = CONFIGS[name]
    env = dict(config.env)
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=profile))
        path = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = str(PROFILING) + (os.pathsep + path if path else "")
        env["SERVER_PROFILE_DIR"] = str(out)
    with (
        tempfile.TemporaryDirectory(prefix="kvtier-bench-") as scratch,
        sidecar(config.sidecar, scratch) as side,
    ):
        settings = None
        if config.kvtier is not None:
            fill = {"{disk}": f"{scratch}/disk", "{remote}": side.get("remote", "")}
            settings = {k: fill.get(v, v) if isinstance(v, str) else v
                        for k, v in config.kvtier.items()}  # fmt: skip
        with vllm_server.serve(
            model,
            dtype=dtype,
            connector=settings,
            args=SERVER_FLAGS + config.flags,
            env={**env, **side.get("env", {})},
            transfer_config=side.get("transfer"),
            python=side.get("python"),
        ) as server:
            result = bench(client_args(server.url, model, num_prompts, workload))
            result["engine_alive"] = server.alive()
            result["server"] = server_metrics(server)
            result["runtime"] = server.runtime()
    if profile is not None:
        result["profile"] = profile_summary(out)
    return result


SERVER_METRICS = {
    "preemptions": "vllm:num_preemptions_total",
    "prompt tokens": "vllm:prompt_tokens_total",
    "computed": "vllm:request_prefill_kv_computed_tokens_sum",
    "local hits": "vllm:prefix_cache_hits_total",
    "external hits": "vllm:external_prefix_cache_hits_total",
    "queue s": "vllm:request_queue_time_seconds_sum",
    "prefill s": "vllm:request_prefill_time_seconds_sum",
}
"""vLLM's own figures of a run, from its /metrics, by the name printed (sums over requests)."""


def server_metrics(server: vllm_server.Server) -> dict[str, float]:
    """The :data:`SERVER_METRICS` a server reports after a run (those it has)."""
    samples: dict[str, float] = {}
    for name, _, value in server.metrics():
        samples[name] = samples.get(name, 0.0) + value
    return {label: samples[name] for label, name in SERVER_METRICS.items() if name in samples}


PROFILING = ROOT / "benchmarks" / "profiling"

PROFILED = (
    "engine.step", "engine.step_with_batch_queue", "scheduler.schedule", "runner.execute_model",
    "kvtier.scheduler._look_up", "kvtier.scheduler.update_state_after_alloc",
    "kvtier.scheduler.build_connector_meta", "kvtier.scheduler.update_connector_output",
    "kvtier.scheduler.request_finished", "kvtier.worker.lookup", "kvtier.worker.bind",
    "kvtier.worker._start_load", "kvtier.worker.handle_preemptions",
    "kvtier.worker.wait_for_layer_load", "kvtier.worker.save_kv_layer",
    "kvtier.worker.wait_for_save", "kvtier.worker.get_transfer_results",
    "kvtier.worker.get_finished", "kvtier.scheduler.get_kv_connector_stats",
    "kvtier.worker.get_kv_connector_stats", "kvtier.blocks_held_after_finish",
    "gc.gen0.python-thread", "gc.gen1.python-thread", "gc.gen2.python-thread",
    "gc.gen0.foreign-thread", "gc.gen1.foreign-thread", "gc.gen2.foreign-thread",
    "gc.gen2.foreign-thread-serving",
)  # fmt: skip


def profile_summary(directory: Path) -> str:
    """Per process of one profiled run: where the timed calls' wall time went, the lookups'
    answers, and the CPU time of its busiest threads (kvtier's JVM threads against vLLM's)."""
    lines = []
    for path in sorted(directory.glob("*.json")):
        record = json.loads(path.read_text())
        times, counts, threads = record["times"], record["counts"], record["threads"]
        if not times:
            continue
        lines.append(f"  process {record['pid']} ({' '.join(record['argv'][:1])}):")
        for name in PROFILED:
            if name in times:
                calls, total, most = times[name]
                lines.append(
                    f"    {name:<44} {calls:>6} calls {total:>8.2f} s "
                    f"mean {1000 * total / calls:>7.2f} ms max {1000 * most:>7.1f} ms"
                )
        if counts:
            lines.append("    " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        busiest = sorted(threads.items(), key=lambda kv: -kv[1])
        total = sum(threads.values())
        kvtier = sum(cpu for name, cpu in threads.items() if name.startswith("kvtier"))
        lines.append(
            f"    thread CPU {total:.1f} s, kvtier-* threads {kvtier:.1f} s; busiest: "
            + ", ".join(f"{name} {cpu:.1f}" for name, cpu in busiest[:8])
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-prompts", type=int, default=160)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--workload", default="prefix8", choices=list(WORKLOADS))
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS))
    parser.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="skip the uncounted first run of each configuration",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="directory: each server's processes record where their time went "
        "(benchmarks/profiling); printed after each run",
    )
    args = parser.parse_args()

    model = str(tiny_model.build())
    print(f"load_bench: {vllm_cpu.summary(dtype=args.dtype)}; workload {args.workload}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.configs}
    for name in args.configs if args.warm_up else ():
        warm = run_once(name, model, args.dtype, args.num_prompts, args.workload)
        print(f"warm-up {name}: {_line(warm)}", flush=True)
    for r in range(args.repeats):
        order = args.configs if r % 2 == 0 else list(reversed(args.configs))
        for name in order:
            result = run_once(
                name, model, args.dtype, args.num_prompts, args.workload, args.profile
            )
            runs[name].append(result)
            print(f"run {r} {name}: {_line(result)}", flush=True)
            if "profile" in result:
                print(result["profile"], flush=True)
    vllm_cpu.check_same_runtime(
        {f"{name} run {i}": res["runtime"] for name, rs in runs.items() for i, res in enumerate(rs)}
    )
    print(
        f"\nmedians [ranges] of {args.repeats} runs ({args.workload}, {args.num_prompts} prompts "
        f"each, dtype {args.dtype}; {vllm_cpu.summary(dtype=args.dtype)})"
    )
    print(
        f"{'config':<18} {'req/s':>17} {'TTFT mean':>10} {'TTFT p50':>19} {'TTFT p99':>21} failed"
    )
    medians = {}
    for name, results in runs.items():
        medians[name] = {m: statistics.median(r[m] for r in results) for m in METRICS}
        low = {m: min(r[m] for r in results) for m in METRICS}
        high = {m: max(r[m] for r in results) for m in METRICS}
        med = medians[name]
        failed = sum(r["failed"] for r in results)
        dead = sum(not r["engine_alive"] for r in results)
        print(
            f"{name:<18} {med['request_throughput']:>5.2f} [{low['request_throughput']:.2f}-"
            f"{high['request_throughput']:.2f}] {med['mean_ttft_ms']:>8.0f}ms "
            f"{med['median_ttft_ms']:>5.0f} [{low['median_ttft_ms']:.0f}-"
            f"{high['median_ttft_ms']:.0f}]ms {med['p99_ttft_ms']:>5.0f} "
            f"[{low['p99_ttft_ms']:.0f}-{high['p99_ttft_ms']:.0f}]ms {failed:>3}"
            + (f"  ENGINE DIED in {dead} runs" if dead else "")
        )
    others = [n for n in ("without-kvtier", "lmcache", "ceiling") if n in medians]
    print("\nkvtier against the others (throughput: kvtier / other; TTFT: kvtier / other)")
    for name in (n for n in medians if n.startswith("kvtier")):
        mine = medians[name]
        parts = []
        for other in others:
            ratio = {m: mine[m] / medians[other][m] for m in METRICS}
            parts.append(
                f"{other}: throughput {ratio['request_throughput']:.2f}x, "
                f"p50 {ratio['median_ttft_ms']:.2f}x, p99 {ratio['p99_ttft_ms']:.2f}x"
            )
        print(f"{name:<18} " + "; ".join(parts))


def _line(result: dict[str, Any]) -> str:
    return (
        f"{result['completed']} done, {result['failed']} failed, "
        f"{result['request_throughput']:.2f} req/s, TTFT mean {result['mean_ttft_ms']:.0f} ms, "
        f"p50 {result['median_ttft_ms']:.0f} ms, p99 {result['p99_ttft_ms']:.0f} ms"
        + ("" if result["engine_alive"] else ", engine DEAD")
        + "".join(f"; {k} {v:.0f}" for k, v in result.get("server", {}).items())
    )


if __name__ == "__main__":
    main()
