"""How kvtier's tests, demo and benchmarks run vLLM on this CPU: the dtype and the thread count.

vLLM's CPU backend chooses its OpenMP thread count per run, and not the same way for every run: it
keeps cores out of its compute threads for the scheduler, and one more when a KV connector is
configured. On a CPU without a native bfloat16 matmul (AVX2 only) bfloat16 falls back to a slow
path whose rounding depends on the thread count, so a run with kvtier and one without could differ
for reasons that have nothing to do with kvtier. Everything here that compares runs therefore:

- runs every one of them with the environment of :func:`vllm_env` (the OpenMP threads and the cores
  they are bound to, set explicitly, connector or not);
- runs them in the dtype of :func:`choose_dtype`: bfloat16 only where the CPU has a native
  bfloat16 path (AVX512-BF16 or AMX), float32 elsewhere; exact comparisons use float32 anyway;
- records what each run actually used, and refuses to compare runs that differ
  (:func:`check_same_runtime`).

Run ``python examples/vllm_cpu.py`` to print what this machine gets; ``--env`` prints the
threading variables as shell assignments, for starting vLLM by hand the same way. Only the
standard library is needed.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Cpu:
    """The CPU this process runs on, as far as vLLM's choice of kernels cares."""

    model: str
    flags: frozenset[str]
    cores: tuple[int, ...]
    """The CPUs this process may run on (its affinity mask), in order."""

    @property
    def isa(self) -> str:
        """The widest vector instruction set, with its bfloat16 extensions: 'AVX-512 + AMX'..."""
        if "avx512f" not in self.flags:
            return "AVX2 only" if "avx2" in self.flags else "no AVX2"
        extras = [name for flag, name in _BF16_FLAGS if flag in self.flags]
        return "AVX-512" + "".join(f" + {e}" for e in extras)

    def describe(self) -> str:
        return f"{self.model} ({self.isa}), {len(self.cores)} cores"


_BF16_FLAGS = (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16"))
"""CPU flags (as /proc/cpuinfo spells them) that give oneDNN a native bfloat16 matmul."""


def cpu() -> Cpu:
    """Reads /proc/cpuinfo and this process's affinity; never fails (unknown fields are empty)."""
    model, flags = "unknown CPU", ""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    if m := re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE):
        model = m.group(1).strip()
    if m := re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE):
        flags = m.group(1)
    try:
        cores = tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = tuple(range(os.cpu_count() or 1))
    return Cpu(model=model, flags=frozenset(flags.split()), cores=cores)


def native_bf16(info: Cpu | None = None) -> bool:
    """True when vLLM's CPU backend has a native bfloat16 matmul here (AVX512-BF16 or AMX)."""
    info = info or cpu()
    return any(flag in info.flags for flag, _ in _BF16_FLAGS)


def choose_dtype(info: Cpu | None = None) -> tuple[str, str]:
    """(dtype, why): bfloat16 where the CPU multiplies it natively, float32 elsewhere.

    ``KVTIER_VLLM_DTYPE`` overrides the choice (the reason then says so).
    """
    forced = os.environ.get("KVTIER_VLLM_DTYPE")
    if forced:
        return forced, "set by KVTIER_VLLM_DTYPE"
    info = info or cpu()
    if native_bf16(info):
        return "bfloat16", f"{info.isa}: native bfloat16 matmul"
    return "float32", f"{info.isa}: no native bfloat16 matmul, bfloat16 would take a slow path"


def threads(info: Cpu | None = None) -> int:
    """OpenMP threads for vLLM's compute: ``KVTIER_VLLM_THREADS``, else every core we may use."""
    forced = os.environ.get("KVTIER_VLLM_THREADS")
    if forced:
        return int(forced)
    return len((info or cpu()).cores)


def vllm_env(n_threads: int | None = None, info: Cpu | None = None) -> dict[str, str]:
    """Environment that fixes vLLM's CPU threading for a run, whether a connector is set or not.

    ``VLLM_CPU_OMP_THREADS_BIND`` names the cores explicitly, which replaces vLLM's automatic
    choice (and with it the core it reserves for a KV connector) in its multiprocess executor;
    ``OMP_NUM_THREADS`` sets the same count for the in-process executor, which reads only that.
    """
    info = info or cpu()
    n = n_threads or threads(info)
    if not 1 <= n <= len(info.cores):
        raise ValueError(f"{n} threads asked for; this process may use {len(info.cores)} cores")
    bound = ",".join(str(c) for c in info.cores[:n])
    return {"OMP_NUM_THREADS": str(n), "VLLM_CPU_OMP_THREADS_BIND": bound}


def runtime_of(run: Mapping[str, Any]) -> tuple[Any, Any]:
    """(dtype, threads per worker) a run reported; see run_llm.py and check_same_runtime."""
    return run.get("dtype"), tuple(run.get("threads") or ())


def check_same_runtime(runs: Mapping[str, Mapping[str, Any]]) -> None:
    """Raises AssertionError naming every run's dtype and thread count unless they all agree.

    ``runs`` maps a run's name ("without kvtier", "cold", ...) to what it reported, with "dtype"
    and "threads" (a list, one entry per worker).
    """
    seen = {name: runtime_of(run) for name, run in runs.items()}
    if len(set(seen.values())) > 1 or any(not d or not t for d, t in seen.values()):
        detail = "; ".join(f"{name}: dtype {d}, threads {list(t)}" for name, (d, t) in seen.items())
        raise AssertionError(f"compared runs did not use the same dtype and threads: {detail}")


def summary(info: Cpu | None = None, dtype: str | None = None) -> str:
    """One line: CPU, instruction set, dtype (with why) and thread count."""
    info = info or cpu()
    chosen, why = choose_dtype(info)
    return f"CPU {info.describe()}; dtype {dtype or chosen} ({why}); {threads(info)} threads"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="store_true", help="print shell assignments")
    args = parser.parse_args(argv)
    if args.env:
        for key, value in vllm_env().items():
            print(f"export {key}='{value}'")
    else:
        print(summary())


if __name__ == "__main__":
    main()
