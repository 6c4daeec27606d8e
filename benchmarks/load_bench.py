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
import statistics
import sys
import tempfile
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


@dataclass(frozen=True)
class Config:
    """One way to serve: kvtier's settings (None: without kvtier) and extra server flags."""

    kvtier: dict[str, Any] | None
    flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


CONFIGS: dict[str, Config] = {
    "without-kvtier": Config(None),
    "kvtier-cpu": Config({"max_local_cpu_size": 2}),
    # kvtier's JVM and threads confined to the core of vLLM's first OpenMP thread: where they ran
    # before kvtier chose its CPUs (they inherited that thread's binding).
    "kvtier-cpu-core0": Config({"max_local_cpu_size": 2}, env={"KVTIER_CPUS": "0"}),
    "kvtier-cpu-disk": Config(
        {"max_local_cpu_size": 0.1, "local_disk": "{disk}", "max_local_disk_size": 2}
    ),
    # The ceiling: vLLM alone with a KV cache that holds every prefix and request at once.
    "ceiling": Config(
        None, ["--num-gpu-blocks-override", "2000", "--kv-cache-memory-bytes", str(1 << 30)]
    ),  # fmt: skip
}
"""Configurations by name; "{disk}" in a setting becomes a fresh directory for each run."""

METRICS = ("request_throughput", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms")


def client_args(url: str, model: str, num_prompts: int) -> argparse.Namespace:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    return parser.parse_args(
        [
            "--backend", "vllm", "--base-url", url, "--model", model, "--tokenizer", model,
            "--dataset-name", "prefix_repetition",
            "--prefix-repetition-prefix-len", "1536",
            "--prefix-repetition-suffix-len", "200",
            "--prefix-repetition-num-prefixes", "8",
            "--prefix-repetition-output-len", "16",
            "--num-prompts", str(num_prompts), "--max-concurrency", "8",
            "--seed", "3", "--temperature", "0", "--disable-tqdm",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        ]
    )  # fmt: skip


def run_once(
    name: str, model: str, dtype: str, num_prompts: int, profile: Path | None = None
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
    with tempfile.TemporaryDirectory(prefix="kvtier-bench-") as scratch:
        settings = None
        if config.kvtier is not None:
            settings = {k: str(v).replace("{disk}", f"{scratch}/disk") if isinstance(v, str)
                        else v for k, v in config.kvtier.items()}  # fmt: skip
        with vllm_server.serve(
            model,
            dtype=dtype,
            connector=settings,
            args=SERVER_FLAGS + config.flags,
            env=env,
        ) as server:
            result = bench(client_args(server.url, model, num_prompts))
            result["engine_alive"] = server.alive()
            result["server"] = server_metrics(server.url)
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


def server_metrics(url: str) -> dict[str, float]:
    """The :data:`SERVER_METRICS` a server reports after a run (those it has)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
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
    "kvtier.worker.get_finished", "kvtier.blocks_held_after_finish",
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
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
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
    print(f"load_bench: {vllm_cpu.summary(dtype=args.dtype)}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.configs}
    for name in args.configs if args.warm_up else ():
        warm = run_once(name, model, args.dtype, args.num_prompts)
        print(f"warm-up {name}: {_line(warm)}", flush=True)
    for r in range(args.repeats):
        order = args.configs if r % 2 == 0 else list(reversed(args.configs))
        for name in order:
            result = run_once(name, model, args.dtype, args.num_prompts, args.profile)
            runs[name].append(result)
            print(f"run {r} {name}: {_line(result)}", flush=True)
            if "profile" in result:
                print(result["profile"], flush=True)
    vllm_cpu.check_same_runtime(
        {f"{name} run {i}": res["runtime"] for name, rs in runs.items() for i, res in enumerate(rs)}
    )
    base = args.configs[0]
    print(f"\nmedians of {args.repeats} runs ({args.num_prompts} prompts each, dtype {args.dtype})")
    header = ("config", "req/s", "TTFT mean", "p50", "p99", "failed")
    print("{:<18} {:>7} {:>10} {:>8} {:>8} {:>7}  ratios".format(*header))
    medians = {
        name: {m: statistics.median(r[m] for r in results) for m in METRICS}
        for name, results in runs.items()
    }
    for name, med in medians.items():
        failed = sum(r["failed"] for r in runs[name])
        dead = sum(not r["engine_alive"] for r in runs[name])
        ratio = medians[base]
        print(
            f"{name:<18} {med['request_throughput']:>7.2f} {med['mean_ttft_ms']:>8.0f}ms "
            f"{med['median_ttft_ms']:>6.0f}ms {med['p99_ttft_ms']:>6.0f}ms {failed:>7}  "
            f"throughput {med['request_throughput'] / ratio['request_throughput']:.2f}x, "
            f"p99 TTFT {med['p99_ttft_ms'] / ratio['p99_ttft_ms']:.2f}x"
            + (f", ENGINE DIED in {dead} runs" if dead else "")
        )


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
