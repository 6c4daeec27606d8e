"""Where kvtier's start-up time goes, outside vLLM: each step a vLLM process takes, timed in order.

    python benchmarks/startup_parts.py [--repeats 3]

Each run is a fresh process: importing kvtier, starting the JVM, the scheduler's settings
(``SchedulerBridge``), then a worker's engine with the default 5 GB CPU tier (its first slab
mapped and faulted in) for the tiny model of ``examples/tiny_model.py`` (12 layers, 2 KV heads of
64, bfloat16). Prints the median of each step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def once() -> dict[str, float]:
    t0 = time.perf_counter()
    from kvtier import _bridge, _jvm
    from kvtier.engine import Engine, Layout

    t1 = time.perf_counter()
    _jvm.start()
    t2 = time.perf_counter()
    _bridge.scheduler.load_config({})
    t3 = time.perf_counter()
    layout = Layout(
        model_id="startup-parts", kv_dtype="bfloat16", num_layers=12, kv_heads_per_rank=2,
        head_size=64, bytes_per_token=12 * 2 * 2 * 64 * 2, chunk_order="head-major",
    )  # fmt: skip
    engine = Engine(layout, {})
    t4 = time.perf_counter()
    engine.close()
    return {"import": t1 - t0, "jvm": t2 - t1, "settings": t3 - t2, "engine": t4 - t3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once:
        print(json.dumps(once()), flush=True)
        return
    runs = []
    for _ in range(args.repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--once"], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(next(x for x in out.stdout.splitlines() if x.startswith("{"))))
    for step, what in (
        ("import", "import kvtier"),
        ("jvm", "start the JVM"),
        ("settings", "scheduler settings (SchedulerBridge)"),
        ("engine", "engine, 5 GB CPU tier (first slab faulted in)"),
    ):
        values = [r[step] for r in runs]
        print(f"{what:<48} {statistics.median(values) * 1e3:7.0f} ms (range "
              f"{min(values) * 1e3:.0f}-{max(values) * 1e3:.0f})")  # fmt: skip


if __name__ == "__main__":
    main()
