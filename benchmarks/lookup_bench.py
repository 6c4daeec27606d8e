"""Lookup micro-benchmark: a LOOKUP through the Unix-domain-socket server vs the in-process call.

Workload: one engine (chunk_size 256) holding every chunk of an 8k-token prompt (8192 tokens,
32 chunks), served by io.kvtier.engine.LookupServer in this process's JVM. Per iteration, in the
same order every time: engine.lookup(tokens) through the Python Engine (numpy -> Java int[] and the
engine's full-hit lookup: 32 chained hashes and index probes), then LookupClient.lookup over one
socket (framing, send, the server's event loop doing the same engine lookup, reply), then the
client over two sockets served by two engines (requests sent to both before either reply is read).
Warm-up of --warmup iterations, then the median of --reps (default 2000) for each.

Client and server share this process (the server runs on its own Java thread, outside the GIL), so
the socket figure is one local round trip plus both sides' work; in vLLM the scheduler and the
worker are separate processes on the same host.

Run: .venv/bin/python benchmarks/lookup_bench.py [--reps N] [--tokens N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

from kvtier import _jvm
from kvtier.engine import Engine, Layout
from kvtier.vllm._lookup import LookupClient, start_server

CHUNK = 256
BYTES_PER_TOKEN = 1024  # lookups never touch the bytes; this only sizes the stored chunks


def stored_engine(tokens: np.ndarray) -> Engine:
    layout = Layout("bench", "bfloat16", 2, 2, 128, bytes_per_token=BYTES_PER_TOKEN)
    engine = Engine(layout, {"chunk_size": CHUNK, "max_local_cpu_size": 0.1})
    chunks = [np.ones(CHUNK * BYTES_PER_TOKEN, np.uint8) for _ in range(len(tokens) // CHUNK)]
    assert engine.store(tokens, chunks) == len(chunks)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=8192)
    args = parser.parse_args()

    info = _jvm.start()
    print(f"JVM {info.java_version} from {info.source}; {os.cpu_count()} CPUs")
    tokens = np.random.default_rng(0).integers(0, 150_000, args.tokens, dtype=np.int32)
    engines = [stored_engine(tokens), stored_engine(tokens)]
    sock_dir = tempfile.mkdtemp(prefix="kvl-bench-")
    paths = [os.path.join(sock_dir, f"r{i}.sock") for i in range(2)]
    servers = [start_server(e, p) for e, p in zip(engines, paths, strict=True)]
    one, two = LookupClient(paths[:1]), LookupClient(paths)
    expected = args.tokens // CHUNK * CHUNK
    cases = {
        "in-process engine.lookup": lambda: engines[0].lookup(tokens),
        "socket LOOKUP, 1 rank": lambda: one.lookup(1, tokens, pin=False),
        "socket LOOKUP, 2 ranks (min)": lambda: two.lookup(1, tokens, pin=False),
    }
    try:
        for fn in cases.values():
            assert fn() == expected
        times: dict[str, list[int]] = {name: [] for name in cases}
        for i in range(args.warmup + args.reps):
            for name, fn in cases.items():
                t0 = time.perf_counter_ns()
                fn()
                if i >= args.warmup:
                    times[name].append(time.perf_counter_ns() - t0)
    finally:
        one.close()
        two.close()
        for s in servers:
            s.close()
        for e in engines:
            e.close()
        shutil.rmtree(sock_dir, ignore_errors=True)

    print(
        f"\nlookup of a {args.tokens}-token prompt, {args.tokens // CHUNK} chunks all stored, "
        f"median of {args.reps}"
    )
    base = statistics.median(times["in-process engine.lookup"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<30} {med / 1000:8.1f} us  {med / base:5.2f}x in-process")


if __name__ == "__main__":
    main()
