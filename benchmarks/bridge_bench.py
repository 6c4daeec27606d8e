"""Bridge micro-benchmark: the cost of a Python→Java call and of a host-to-host copy in Java.

Workload:
  (a) 200,000 calls of BridgeProbe.ping(int, long, long) through kvtier's exception-translating
      proxy, and the same through JPype directly, against an empty Python function call.
      Goal: <= 5 us per call through the proxy.
  (b) a 64 MiB host-to-host copy between two numpy arrays, done by Java (one thread, and split
      over all cores) against numpy's own np.copyto of the same bytes, interleaved in the same run,
      median of the repetitions. Goal: Java >= 0.9x numpy.

Run: .venv/bin/python benchmarks/bridge_bench.py [--reps N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from kvtier import _jvm, hostmem

MIB = 1 << 20


def per_call_ns(fn: Callable[[int, int, int], object], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn(1, 2, 3)
    return (time.perf_counter_ns() - start) / calls


def bench_calls(calls: int) -> dict[str, float]:
    proxy = _jvm.java_class("io.kvtier.bridge.BridgeProbe")
    raw = proxy.java.ping
    guarded = proxy.ping

    def empty(a: int, b: int, c: int) -> int:
        return a + b + c

    for fn in (guarded, raw, empty):  # warm-up: JIT on the Java side, caches on ours
        per_call_ns(fn, calls // 4)
    results = {}
    for name, fn in (("kvtier proxy", guarded), ("jpype direct", raw), ("python empty fn", empty)):
        results[name] = min(per_call_ns(fn, calls) for _ in range(3))
    return results


def bench_copy(nbytes: int, reps: int) -> dict[str, float]:
    src = np.empty(nbytes, np.uint8)
    hostmem.fill_pattern(src, 1)
    dst = np.ones(nbytes, np.uint8)  # pages touched up front: no first-touch faults in timings
    threads = os.cpu_count() or 1

    def numpy_copy() -> None:
        np.copyto(dst, src)

    def java_copy() -> None:
        hostmem.copy(src, dst)

    def java_parallel() -> None:
        hostmem.copy(src, dst, threads=threads)

    cases = {
        "numpy np.copyto": numpy_copy,
        "java copy (1 thread)": java_copy,
        f"java copy ({threads} threads)": java_parallel,
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        fn()
    for _ in range(reps):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    assert np.array_equal(src[:4096], dst[:4096]) and np.array_equal(src[-4096:], dst[-4096:])
    return {name: nbytes / statistics.median(ts) / 1e9 for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--mib", type=int, default=64)
    args = parser.parse_args()

    info = _jvm.start()
    print(f"JVM {info.java_version} from {info.source}; {os.cpu_count()} CPUs")

    print(f"\n(a) Python->Java call, {args.calls} calls of ping(int, long, long)")
    calls = bench_calls(args.calls)
    for name, ns in calls.items():
        print(f"  {name:<18} {ns / 1000:7.3f} us/call")
    proxy_us = calls["kvtier proxy"] / 1000
    verdict = "MET" if proxy_us <= 5 else "MISSED"
    print(f"  goal <= 5 us through the proxy: {verdict} ({proxy_us:.2f} us)")

    print(f"\n(b) host-to-host copy of {args.mib} MiB, median of {args.reps}")
    bw = bench_copy(args.mib * MIB, args.reps)
    base = bw["numpy np.copyto"]
    for name, gbps in bw.items():
        print(f"  {name:<22} {gbps:6.2f} GB/s  {gbps / base:5.2f}x numpy")
    best = max(v for k, v in bw.items() if k.startswith("java"))
    print(f"  goal >= 0.9x numpy: {'MET' if best / base >= 0.9 else 'MISSED'} ({best / base:.2f}x)")


if __name__ == "__main__":
    main()
