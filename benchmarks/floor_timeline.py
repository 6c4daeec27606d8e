"""Where an N-token prefix hit's time goes: vLLM's own prefix cache against kvtier's CPU tier.

    python benchmarks/floor_timeline.py [--tokens 8000] [--repeats 5] [--settings JSON]

One vLLM per system, each in its own fresh process with vLLM's engine in that process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), the tiny model of ``vllm_bench.py``: after a 1024-token
warm-up pair, the prompt of ``vllm_bench.py floor``'s "same" case is generated once (stored), then
``--repeats`` more times with one output token; each of those is timed by wrappers around vLLM's
``schedule()`` and the model runner's ``execute_model``, and around kvtier's scheduler lookup and
worker ``bind`` (where a hit from CPU memory loads). Prints medians per system:

- request: ``LLM.generate`` of the prompt;
- schedule: vLLM's ``schedule()`` (kvtier's lookup included), and kvtier's lookup alone;
- load: kvtier's ``bind`` (the copy of the hit into vLLM's KV cache);
- other: the rest of kvtier's worker-side calls in the step (saves, finished reports, stats,
  events);
- forward: ``execute_model`` less every kvtier call in it.

For kvtier it also prints each hit's load in order, and with ``--repeats`` of 10 or more the first
against the median from the tenth on: whether the first loads in a fresh process cost more.

``--settings``: kvtier settings for its run, e.g. ``'{"use_layerwise": true}'`` (the load then runs
inside the forward, layer by layer: compare the requests).

The in-process engine busy-polls between steps instead of sleeping 1 ms as vLLM's engine process
does: use it for hits served in the step (the CPU tier), not for background loads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

PARTS = ("request", "schedule", "lookup", "load", "other", "forward")
WORKER_CALLS = (
    "bind_connector_metadata",
    "start_load_kv",
    "wait_for_layer_load",
    "save_kv_layer",
    "wait_for_save",
    "get_finished",
    "build_connector_worker_meta",
    "get_kv_connector_kv_cache_events",
    "get_block_ids_with_load_errors",
    "get_kv_connector_stats",
    "clear_connector_metadata",
)
"""The connector's worker-side calls in a step, all timed as kvtier's part of ``execute_model``."""


def _timed(cls: type, name: str, spans: dict[str, list[float]], label: str) -> None:
    """Wraps ``cls.name`` so each call's seconds are appended to ``spans[label]``."""
    original = getattr(cls, name)

    def wrapper(self, *args, **kwargs):  # noqa: ANN001
        began = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spans[label].append(time.perf_counter() - began)

    setattr(cls, name, wrapper)


def child(
    system: str, tokens: int, repeats: int, settings: dict | None = None
) -> list[dict[str, float]]:
    """One process: the timed requests' parts in ms."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    import tiny_model
    import vllm_bench
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    from kvtier.vllm.connector import KVTierConnector
    from kvtier.vllm.scheduler import KVTierScheduler
    from kvtier.vllm.worker import KVTierWorker

    spans: dict[str, list[float]] = defaultdict(list)
    _timed(Scheduler, "schedule", spans, "schedule")
    _timed(CPUModelRunner, "execute_model", spans, "execute")
    _timed(KVTierScheduler, "get_num_new_matched_tokens", spans, "lookup")
    _timed(KVTierWorker, "bind", spans, "load")
    for name in WORKER_CALLS:
        _timed(KVTierConnector, name, spans, "worker")
    kvtier = system == "cpu"
    llm = vllm_bench.make_llm(
        str(tiny_model.build()),
        tokens + 64,
        kvtier,
        prefix_caching=not kvtier,
        settings=settings,
    )
    one = SamplingParams(max_tokens=1, temperature=0.0)

    def generate(prompt: list[int]) -> float:
        began = time.perf_counter()
        llm.generate([TokensPrompt(prompt_token_ids=prompt)], one, use_tqdm=False)
        return time.perf_counter() - began

    warm_up = tiny_model.prompt(1024, seed=99)
    generate(warm_up)
    generate(warm_up)
    prompt = vllm_bench.floor_prompts(tokens)["same"][0]
    generate(prompt)
    time.sleep(1)  # kvtier's save of the prompt ends (else the next request waits for it)
    rows = []
    for _ in range(repeats):
        spans.clear()
        request = generate(prompt)
        load = sum(spans["load"])
        worker = sum(spans["worker"])
        rows.append(
            {
                "request": request * 1e3,
                "schedule": sum(spans["schedule"]) * 1e3,
                "lookup": sum(spans["lookup"]) * 1e3,
                "load": load * 1e3,
                "other": (worker - load) * 1e3,
                "forward": (sum(spans["execute"]) - worker) * 1e3,
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=8000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--settings", default="{}", help="kvtier settings (JSON) for its run")
    p.add_argument("--child", choices=["vllm", "cpu"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tokens, args.repeats, json.loads(args.settings))))
        return
    import vllm_bench
    import vllm_cpu

    print(
        f"floor_timeline: {vllm_cpu.summary()}; {args.tokens} tokens; kvtier settings "
        f"{args.settings}",
        flush=True,
    )
    medians: dict[str, dict[str, float]] = {}
    for system in ("vllm", "cpu"):
        stdout = vllm_bench.run_child(
            __file__,
            [
                *("--child", system),
                *("--tokens", str(args.tokens), "--repeats", str(args.repeats)),
                *("--settings", args.settings),
            ],
            system,
        )
        rows = json.loads(stdout.strip().splitlines()[-1])
        medians[system] = {k: statistics.median(r[k] for r in rows) for k in PARTS}
        ranges = {k: (min(r[k] for r in rows), max(r[k] for r in rows)) for k in PARTS}
        print(
            f"{'vLLM prefix cache' if system == 'vllm' else 'kvtier CPU tier':>18}: "
            + ", ".join(
                f"{k} {medians[system][k]:.1f} ms [{ranges[k][0]:.1f}-{ranges[k][1]:.1f}]"
                for k in PARTS
            ),
            flush=True,
        )
        if system == "cpu":
            loads = [r["load"] for r in rows]
            print(
                "   kvtier's load, hit by hit: "
                + " ".join(f"{x:.1f}" for x in loads)
                + " ms"
                + (
                    f"; the first {loads[0]:.1f} ms against {statistics.median(loads[9:]):.1f} ms "
                    f"from the tenth on ({loads[0] / statistics.median(loads[9:]):.2f}x)"
                    if len(loads) >= 10
                    else ""
                ),
                flush=True,
            )
    base, kv = medians["vllm"], medians["cpu"]
    print(
        f"kvtier / vLLM: request {kv['request'] / base['request']:.2f}x; kvtier's own parts: "
        f"lookup {kv['lookup']:.1f} ms + load {kv['load']:.1f} ms + other "
        f"{kv['other']:.1f} ms; forward "
        f"{kv['forward']:.1f} against {base['forward']:.1f} ms"
    )


if __name__ == "__main__":
    main()
