"""vLLM (CPU) with kvtier: warm vs cold time to first token, and the connector's cost on misses.

    python benchmarks/vllm_bench.py ttft [--sizes 2048 8192 16384]
    python benchmarks/vllm_bench.py overhead [--repeats 3 --prompts 24 --tokens 1024]
    python benchmarks/vllm_bench.py startup [--repeats 3 --tokens 2048]
    python benchmarks/vllm_bench.py floor [--sizes 2000 4000 8000 --repeats 3]

``ttft``: one vLLM with kvtier (CPU tier, vLLM's prefix cache off); each prompt is generated twice
with one output token; the first request computes and saves, the second loads. Prints both times
and their ratio per size.

``overhead``: a batch of distinct prompts (nothing can hit) through vLLM without and with kvtier,
each run in a fresh process, alternating (off, on, on, off, ...) ``--repeats`` times; prints the
median throughput
(prompt + output tokens per second) of each and their ratio. This is the serving cost of the
connector's lookups and saves when it never helps. Both modes run with the same threads, bound to
the same cores (examples/vllm_cpu.py): by default vLLM's CPU backend keeps one more core out of
its compute threads when any KV connector is configured.

``startup``: a fresh process per run, without and with kvtier, alternating: the time to build
vLLM's ``LLM`` (start-up, kvtier's JVM and warm-up included), then the process's very first
prompt generated twice with one output token (with kvtier the second one loads what the first one
saved: the first save and the first load of the process, no warm-up request before them). Also
prints the medians of kvtier's own start-up steps, read from its log lines: the worker side's
set-up (before vLLM allocates its KV cache), the KV cache's registration, the scheduler side's
set-up, and the warm-up (in the background on CPU workers).

``floor``: kvtier against the floor, vLLM's own prefix cache. For each size, (a) the same prompt
twice and (b) a prompt, then another that shares all but its last 300 tokens (a suffix that is not
a multiple of the chunk size); the second request of each is timed (one output token) with its hit
tokens. Three systems, each in fresh processes with a 1024-token warm-up pair first: vLLM's prefix
cache alone (no connector); kvtier's CPU tier (vLLM's prefix cache off, so every hit is kvtier's);
kvtier's disk tier after a restart (one process stores the first requests and exits, a new one
with an empty CPU tier times the second ones). The second request of a case is sent ``--gap-s``
seconds (default 1) after the first, so kvtier's saves of the first have ended (sent at once, it
waits for them: measure that with ``--gap-s 0``). Alternating systems, ``--repeats`` rounds;
prints medians, ranges and each kvtier figure as a ratio of vLLM's own.

All use the small local model of examples/tiny_model.py, in the dtype this CPU multiplies
natively (bfloat16 with AVX512-BF16 or AMX, float32 elsewhere; ``KVTIER_VLLM_DTYPE`` overrides).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import tiny_model  # noqa: E402
import vllm_cpu  # noqa: E402

CONNECTOR = {"kv_connector": "KVTierConnector", "kv_role": "kv_both"}


def make_llm(  # noqa: ANN201 - vllm.LLM
    model: str,
    max_model_len: int,
    connector: bool,
    prefix_caching: bool = False,
    settings: dict | None = None,
):
    from vllm import LLM

    transfer = None
    if connector:
        transfer = {**CONNECTOR, "kv_connector_extra_config": settings or {}}
    return LLM(
        model=model,
        dtype=vllm_cpu.choose_dtype()[0],
        max_model_len=max_model_len,
        max_num_batched_tokens=max_model_len,
        enforce_eager=True,
        enable_prefix_caching=prefix_caching,
        gpu_memory_utilization=0.3,
        kv_transfer_config=transfer,
        seed=0,
    )


SUFFIX = 300
"""The new suffix of the shared-prefix case: not a multiple of the chunk size."""


def floor_prompts(n: int) -> dict[str, list[list[int]]]:
    """Per case, the first (storing) and second (timed) prompt of ``n`` tokens."""
    same = tiny_model.prompt(n, seed=n)
    prefix = tiny_model.prompt(n - SUFFIX, seed=n + 1)
    return {
        "same": [same, same],
        "shared": [
            prefix + tiny_model.prompt(SUFFIX, seed=n + 2),
            prefix + tiny_model.prompt(SUFFIX, seed=n + 3),
        ],
    }


def floor_once(system: str, phase: str, sizes: list[int], disk: str, gap_s: float) -> list[dict]:
    """One process of the floor benchmark: ``phase`` "store" sends the first prompts only,
    "time" the first ones (unless the disk already has them), waits ``gap_s`` and then sends the
    timed second ones."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    model = str(tiny_model.build())
    settings = {"local_disk": disk, "max_local_disk_size": 20} if system == "disk" else None
    llm = make_llm(
        model, max(sizes) + 64, system != "vllm", prefix_caching=system == "vllm", settings=settings
    )
    one = SamplingParams(max_tokens=1, temperature=0.0)

    def timed(tokens: list[int]) -> tuple[float, int]:
        start = time.perf_counter()
        out = llm.generate([TokensPrompt(prompt_token_ids=tokens)], one, use_tqdm=False)[0]
        return (time.perf_counter() - start) * 1e3, int(out.num_cached_tokens or 0)

    warm_up = tiny_model.prompt(1024, seed=99)
    timed(warm_up)
    timed(warm_up)
    rows = []
    for n in sizes:
        for case, (first, second) in floor_prompts(n).items():
            if phase == "store" or system != "disk":
                timed(first)
            if phase == "time":
                time.sleep(gap_s)  # the first request's saves end (else the second waits for them)
                ms, hit = timed(second)
                rows.append({"system": system, "size": n, "case": case, "ms": ms, "hit": hit})
    return rows


def run_child(script: str, args: list[str], what: str) -> str:
    """Runs ``python script *args`` with vLLM's CPU settings (``vllm_cpu.vllm_env()``) and
    returns its standard output; if it fails, writes the tails of its output and exits with a
    message naming ``what``."""
    out = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **vllm_cpu.vllm_env()},
    )
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
        raise SystemExit(f"{what} failed with exit code {out.returncode}")
    return out.stdout


def floor(sizes: list[int], repeats: int, gap_s: float) -> None:
    import tempfile

    print(f"vllm_bench floor: {vllm_cpu.summary()}", flush=True)
    systems = ["vllm", "cpu", "disk"]
    rows: list[dict] = []

    def child(system: str, phase: str, disk: str) -> list[dict]:
        stdout = run_child(
            __file__,
            ["_floor", system, phase, disk, str(gap_s), *map(str, sizes)],
            f"{system} {phase}",
        )
        line = next(x for x in reversed(stdout.splitlines()) if x.startswith("["))
        return json.loads(line)

    for r in range(repeats):
        order = systems if r % 2 == 0 else systems[::-1]
        for system in order:
            with tempfile.TemporaryDirectory(prefix="kvtier-floor-") as disk:
                if system == "disk":
                    child(system, "store", disk)
                got = child(system, "time", disk)
            for row in got:
                print(
                    f"round {r} {system:>4} {row['size']:>5} {row['case']:>6}: "
                    f"{row['ms']:8.1f} ms, hit {row['hit']}",
                    flush=True,
                )
            rows.extend(got)

    def pick(system: str, n: int, case: str, key: str) -> list[float]:
        return [x[key] for x in rows if (x["system"], x["size"], x["case"]) == (system, n, case)]

    print()
    print(
        f"{'tokens':>6} {'case':>6} {'system':>6} {'median ms':>10} {'range ms':>17} "
        f"{'hit':>6} {'vs vLLM':>8}"
    )
    for n in sizes:
        for case in ("same", "shared"):
            floor_ms = statistics.median(pick("vllm", n, case, "ms"))
            for system in systems:
                ms = pick(system, n, case, "ms")
                hits = pick(system, n, case, "hit")
                med = statistics.median(ms)
                hit = int(statistics.median(hits))
                hit_range = "" if min(hits) == max(hits) else f" ({min(hits)}-{max(hits)})"
                print(
                    f"{n:>6} {case:>6} {system:>6} {med:>10.1f} "
                    f"{f'{min(ms):.1f}-{max(ms):.1f}':>17} {hit:>6}{hit_range} "
                    f"{med / floor_ms:>7.2f}x"
                )


HYBRID = dataclasses.replace(
    tiny_model.SPEC,
    sliding_window=1024,
    layer_types=("sliding_attention", "full_attention") * (tiny_model.SPEC.num_hidden_layers // 2),
)
"""The benchmark model with every other layer attending to the last 1024 tokens (Gemma 2/3's kind
of model; vLLM's hybrid KV cache manager gives it a sliding-window and a full-attention group)."""


def ttft(sizes: list[int], hybrid: bool = False) -> None:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    print(f"vllm_bench ttft{' --hybrid' if hybrid else ''}: {vllm_cpu.summary()}", flush=True)
    os.environ.update(vllm_cpu.vllm_env())
    model = str(tiny_model.build(spec=HYBRID if hybrid else tiny_model.SPEC))
    llm = make_llm(model, max(sizes) + 64, connector=True)
    one = SamplingParams(max_tokens=1, temperature=0.0)
    llm.generate([TokensPrompt(prompt_token_ids=tiny_model.prompt(512, seed=99))], one)  # warm-up
    print(f"{'tokens':>7} {'cold ms':>9} {'warm ms':>9} {'ratio':>7} {'hit':>7}")
    for n in sizes:
        prompt = TokensPrompt(prompt_token_ids=tiny_model.prompt(n, seed=n))
        times, hits = [], []
        for _ in range(2):
            start = time.perf_counter()
            out = llm.generate([prompt], one, use_tqdm=False)[0]
            times.append(time.perf_counter() - start)
            hits.append(int(out.num_cached_tokens or 0))
        cold, warm = times
        print(f"{n:>7} {cold * 1e3:>9.1f} {warm * 1e3:>9.1f} {cold / warm:>6.1f}x {hits[1]:>7}")


def throughput_once(connector: bool, prompts: int, tokens: int, seed: int) -> float:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    model = str(tiny_model.build())
    llm = make_llm(model, 4096, connector)
    batch = [
        TokensPrompt(prompt_token_ids=tiny_model.prompt(tokens, seed=seed * 1000 + i))
        for i in range(prompts)
    ]
    params = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True)
    llm.generate(batch[:2], params, use_tqdm=False)  # warm-up (these two are then not reused)
    start = time.perf_counter()
    outs = llm.generate(batch[2:], params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    total = sum(len(o.prompt_token_ids) + len(o.outputs[0].token_ids) for o in outs)
    return total / elapsed


def overhead(repeats: int, prompts: int, tokens: int) -> None:
    print(f"vllm_bench overhead: {vllm_cpu.summary()}", flush=True)
    runs: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(repeats):
        # ABBA order, so drift over the run (heat, page cache) weighs on both modes alike.
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            out = subprocess.run(
                [sys.executable, __file__, "_throughput", mode, str(prompts), str(tokens), str(r)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, **vllm_cpu.vllm_env()},
            )
            line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith("{"))
            value = json.loads(line)["tokens_per_s"]
            runs[mode].append(value)
            print(f"run {r} kvtier {mode:>3}: {value:10.1f} tokens/s", flush=True)
    off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
    print(f"median without kvtier: {off:.1f} tokens/s")
    print(f"median with kvtier:    {on:.1f} tokens/s   ratio {on / off:.3f}")


def startup_once(connector: bool, tokens: int) -> dict[str, float]:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    model = str(tiny_model.build())
    start = time.perf_counter()
    llm = make_llm(model, tokens + 64, connector)
    built = time.perf_counter() - start
    one = SamplingParams(max_tokens=1, temperature=0.0)
    prompt = TokensPrompt(prompt_token_ids=tiny_model.prompt(tokens, seed=tokens))
    times, hit = [], 0
    for _ in range(2):
        start = time.perf_counter()
        out = llm.generate([prompt], one, use_tqdm=False)[0]
        times.append(time.perf_counter() - start)
        hit = int(out.num_cached_tokens or 0)
    return {"start_s": built, "first_ms": times[0] * 1e3, "second_ms": times[1] * 1e3, "hit": hit}


_PARTS = {
    "worker_ms": re.compile(r"kvtier: worker side set up in (\d+) ms"),
    "register_ms": re.compile(r"KV cache registered in (\d+) ms"),
    "scheduler_ms": re.compile(r"kvtier: scheduler side set up in (\d+) ms"),
    "warm_up_ms": re.compile(r"warmed the save and load paths.* in (\d+) ms"),
    "init_engine_s": re.compile(
        r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s"
    ),
}
"""kvtier's own start-up steps, from its log lines: its two steps in vLLM's worker (connector
set-up, before vLLM allocates its KV cache, then the KV cache's registration), its scheduler-side
set-up, and the warm-up (in the background, off the start-up path where it can be)."""


def _kvtier_parts(log: str) -> dict[str, float]:
    parts: dict[str, float] = {}
    for name, pattern in _PARTS.items():
        m = pattern.search(log)
        if m:
            parts[name] = float(m.group(1))
    return parts


_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "out": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stdout",
        }
    },
    "loggers": {
        name: {"handlers": ["out"], "level": "INFO", "propagate": False}
        for name in ("vllm", "kvtier")
    },
}
"""vLLM's own INFO lines and kvtier's, in every process of vLLM (``VLLM_LOGGING_CONFIG_PATH``), for
runs with and without kvtier alike."""


def startup(repeats: int, tokens: int) -> None:
    print(f"vllm_bench startup: {vllm_cpu.summary()}", flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(_LOGGING, f)
    try:
        _startup_runs(repeats, tokens, f.name)
    finally:
        os.unlink(f.name)


def _startup_runs(repeats: int, tokens: int, logging_config: str) -> None:
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for r in range(repeats):
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            out = subprocess.run(
                [sys.executable, __file__, "_startup", mode, str(tokens)],
                capture_output=True,
                text=True,
                check=True,
                env={
                    **os.environ,
                    **vllm_cpu.vllm_env(),
                    "VLLM_LOGGING_CONFIG_PATH": logging_config,
                },
            )
            line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith("{"))
            run = json.loads(line)
            run.update(_kvtier_parts(out.stdout + out.stderr))
            runs[mode].append(run)
            print(
                f"run {r} kvtier {mode:>3}: start {run['start_s']:6.2f} s, first prompt "
                f"{run['first_ms']:8.1f} ms, again {run['second_ms']:8.1f} ms (hit {run['hit']})",
                flush=True,
            )

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    print(
        f"median start-up: without kvtier {med('off', 'start_s'):.2f} s, with kvtier "
        f"{med('on', 'start_s'):.2f} s (+{med('on', 'start_s') - med('off', 'start_s'):.2f} s)"
    )
    parts = [k for k in _PARTS if k.endswith("_ms") and all(k in r for r in runs["on"])]
    print(
        "median kvtier steps: "
        + ", ".join(f"{k.removesuffix('_ms')} {med('on', k):.0f} ms" for k in parts)
        + " (worker, register and scheduler are on vLLM's start-up path)"
    )
    if all("init_engine_s" in r for r in runs["off"] + runs["on"]):
        off, on = med("off", "init_engine_s"), med("on", "init_engine_s")
        print(
            f"median of vLLM's 'init engine' (its workers: model, KV cache, connector): without "
            f"{off:.2f} s, with kvtier {on:.2f} s (+{on - off:.2f} s)"
        )
    print(
        f"median first prompt ({tokens} tokens): without {med('off', 'first_ms'):.1f} ms, with "
        f"kvtier {med('on', 'first_ms'):.1f} ms (its first save); again: without "
        f"{med('off', 'second_ms'):.1f} ms, with kvtier {med('on', 'second_ms'):.1f} ms "
        f"(its first load)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ttft")
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    p.add_argument("--hybrid", action="store_true", help="every other layer slides (HYBRID)")
    p = sub.add_parser("overhead")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--prompts", type=int, default=24)
    p.add_argument("--tokens", type=int, default=1024)
    p = sub.add_parser("startup")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tokens", type=int, default=2048)
    p = sub.add_parser("floor")
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000, 8000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gap-s", type=float, default=1.0)
    p = sub.add_parser("_floor")
    p.add_argument("system", choices=["vllm", "cpu", "disk"])
    p.add_argument("phase", choices=["store", "time"])
    p.add_argument("disk")
    p.add_argument("gap_s", type=float)
    p.add_argument("sizes", type=int, nargs="+")
    p = sub.add_parser("_startup")
    p.add_argument("mode", choices=["on", "off"])
    p.add_argument("tokens", type=int)
    p = sub.add_parser("_throughput")
    p.add_argument("mode", choices=["on", "off"])
    p.add_argument("prompts", type=int)
    p.add_argument("tokens", type=int)
    p.add_argument("seed", type=int)
    args = parser.parse_args()
    if args.cmd == "ttft":
        ttft(args.sizes, args.hybrid)
    elif args.cmd == "overhead":
        overhead(args.repeats, args.prompts, args.tokens)
    elif args.cmd == "startup":
        startup(args.repeats, args.tokens)
    elif args.cmd == "floor":
        floor(args.sizes, args.repeats, args.gap_s)
    elif args.cmd == "_floor":
        rows = floor_once(args.system, args.phase, args.sizes, args.disk, args.gap_s)
        print(json.dumps(rows), flush=True)
    elif args.cmd == "_startup":
        print(json.dumps(startup_once(args.mode == "on", args.tokens)), flush=True)
    else:
        value = throughput_once(args.mode == "on", args.prompts, args.tokens, args.seed)
        print(json.dumps({"tokens_per_s": value}), flush=True)


if __name__ == "__main__":
    main()
