"""Which CPUs kvtier's JVM threads run on.

A thread inherits the CPU affinity of the thread that creates it. vLLM's CPU worker binds its
OpenMP threads one per core (``GOMP_CPU_AFFINITY``, ``OMP_PLACES`` or ``KMP_AFFINITY``), the
process's main thread included, and that is the thread that starts kvtier's JVM: without care, the
JIT compilers, the garbage collector and every copy, disk and lookup thread of kvtier would share
the first compute core with the model, while the cores vLLM keeps free for a KV connector idle.

kvtier's threads get, in order:

1. ``KVTIER_CPUS`` (a Linux CPU list such as ``30-31`` or ``0,2,4-7``), when set;
2. the CPUs this process may use that the OpenMP binding leaves free (vLLM reserves cores for the
   scheduler and a KV connector when it binds automatically), when there are any;
3. every CPU this process may use (the OpenMP threads are bound to all of them, or not bound).

The JVM starts with the chosen CPUs (its own threads inherit them), and kvtier's Java threads set
them again when they start (``io.kvtier.CpuAffinity``, from the ``kvtier.cpus`` property), since
Java may create them from any thread.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kvtier.errors import ConfigError

ENV = "KVTIER_CPUS"

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_list(text: str, what: str = ENV) -> frozenset[int]:
    """Parses a Linux CPU list (``0-3,8``).

    Raises:
        ConfigError: a malformed list, or an empty one.
    """
    cpus: set[int] = set()
    for part in text.split(","):
        span = _span(part)
        if span is None:
            raise ConfigError(
                f"{what}={text!r}: {part.strip()!r} is not a CPU number or range; use a Linux CPU "
                "list such as 0-3,8"
            )
        if not span or span[-1] > 1023:
            raise ConfigError(f"{what}={text!r}: {part.strip()!r} is not a range of CPUs 0..1023")
        cpus.update(span)
    return frozenset(cpus)


def _span(part: str) -> range | None:
    """``"3"`` or ``"2-5"`` as the CPUs it names (empty for ``"5-2"``); None if it is neither."""
    m = _RANGE.match(part)
    if m is None:
        return None
    return range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1)


def format_list(cpus: frozenset[int] | set[int]) -> str:
    """``{0, 1, 2, 5}`` as ``0-2,5``."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [c]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def allowed_cpus() -> frozenset[int]:
    """The CPUs this process may use: its cgroup's cpuset where there is one, else every CPU.

    Not the calling thread's affinity, which the OpenMP binding may have narrowed to one core.
    """
    for path in _cpuset_files():
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text:
            try:
                return parse_list(text, str(path))
            except ConfigError:
                continue
    return frozenset(range(os.cpu_count() or 1))


def _cpuset_files() -> list[Path]:
    files = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            if hierarchy == "0":  # cgroup v2
                files.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "cpuset.cpus.effective")
            elif "cpuset" in controllers.split(","):  # cgroup v1
                files.append(Path("/sys/fs/cgroup/cpuset") / path.lstrip("/") / "cpuset.cpus")
    except (OSError, ValueError):
        pass
    files.append(Path("/sys/fs/cgroup/cpuset.cpus.effective"))
    return files


def openmp_cpus(env: dict[str, str] | None = None) -> frozenset[int]:
    """The CPUs OpenMP threads are bound to, from the variables vLLM sets for its worker, and
    every rank's cores when ``VLLM_CPU_OMP_THREADS_BIND`` lists them (``0-3|4-7``); empty when
    nothing is bound."""
    env = os.environ if env is None else env
    cpus: set[int] = set()
    for rank in env.get("VLLM_CPU_OMP_THREADS_BIND", "").split("|"):
        if rank.strip() not in ("", "auto", "nobind"):
            cpus.update(_numbers(rank))
    for part in env.get("GOMP_CPU_AFFINITY", "").replace(",", " ").split():
        cpus.update(_numbers(part.split(":")[0]))  # "a-b:stride" counted as all of a-b
    kmp = re.search(r"proclist=\[([^\]]*)\]", env.get("KMP_AFFINITY", ""))
    if kmp:
        cpus.update(_numbers(kmp.group(1)))
    places = env.get("OMP_PLACES", "")
    if "{" in places:  # explicit places; abstract names (cores, threads) bind nothing we can see
        for place in re.findall(r"\{([^}]*)\}", places):
            cpus.update(_place(place))
    return frozenset(c for c in cpus if c <= 1023)


def _numbers(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        out.update(_span(part) or ())
    return out


def _place(text: str) -> set[int]:
    """One OpenMP place: ``0,1,2`` or ``0:4`` (start:length) or ``0:4:2`` (with a stride)."""
    out: set[int] = set()
    for part in text.split(","):
        nums = [p.strip() for p in part.split(":")]
        if not all(n.isdigit() for n in nums):
            continue
        start = int(nums[0])
        length = int(nums[1]) if len(nums) > 1 else 1
        stride = int(nums[2]) if len(nums) > 2 else 1
        out.update(start + i * stride for i in range(length))
    return out


def choose() -> tuple[frozenset[int], str]:
    """The CPUs for kvtier's threads and where that choice came from.

    Raises:
        ConfigError: ``KVTIER_CPUS`` is malformed or names no CPU this process may use.
    """
    allowed = allowed_cpus()
    raw = os.environ.get(ENV, "").strip()
    if raw:
        chosen = parse_list(raw) & allowed
        if not chosen:
            raise ConfigError(
                f"{ENV}={raw!r} names no CPU this process may use (allowed: {format_list(allowed)})"
            )
        return chosen, ENV
    bound = openmp_cpus() & allowed
    spare = allowed - bound
    if bound and spare:
        return spare, "the CPUs vLLM's OpenMP threads leave free"
    return allowed, "every CPU this process may use"
