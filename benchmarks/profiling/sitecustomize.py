"""Where a vLLM server's time goes with and without kvtier: loaded into every process of a
``vllm serve`` whose ``PYTHONPATH`` starts with this directory and whose environment sets
``SERVER_PROFILE_DIR`` (``benchmarks/load_bench.py --profile`` does both).

In each process that imports them, it times (wall clock, per call):

- vLLM's engine step (``EngineCore.step`` / ``step_with_batch_queue``), the scheduler's
  ``schedule()`` and the model runner's ``execute_model``;
- every method of kvtier's connector, by side (the scheduler's lookup, allocation and metadata;
  the worker's bind and in-step loads, saves, finished reports);
- the answers of the scheduler's lookups: hits (tokens), "ask again" (a save of the next chunk in
  flight, or a remote answer pending) and misses.

A sampling thread writes ``<dir>/<pid>.json`` every two seconds (so a process stopped by a signal
leaves its figures): those timings plus each thread's CPU time by name (``/proc/self/task``), so
kvtier's JVM threads can be told from vLLM's. Nothing here changes what the server does.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import sys
import threading
import time
from typing import Any

_DIR = os.environ.get("SERVER_PROFILE_DIR")
_LOCK = threading.Lock()
_TIMES: dict[str, list[float]] = {}
"""name -> [calls, total seconds, max seconds]."""
_COUNTS: dict[str, int] = {}


def _add(name: str, seconds: float) -> None:
    with _LOCK:
        entry = _TIMES.setdefault(name, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += seconds
        entry[2] = max(entry[2], seconds)


def _count(name: str, n: int = 1) -> None:
    with _LOCK:
        _COUNTS[name] = _COUNTS.get(name, 0) + n


def _timed(name: str, method: Any) -> Any:
    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            _add(name, time.perf_counter() - start)

    return timed


def _wrap(cls: type, names: list[str], prefix: str) -> None:
    for name in names:
        method = cls.__dict__.get(name)
        if method is not None and not getattr(method, "_profiled", False):
            wrapped = _timed(f"{prefix}.{name}", method)
            wrapped._profiled = True  # type: ignore[attr-defined]
            setattr(cls, name, wrapped)


def _lookup_answers(method: Any) -> Any:
    @functools.wraps(method)
    def counted(self: Any, request: Any, num_computed_tokens: int) -> Any:
        answer = method(self, request, num_computed_tokens)
        tokens = answer[0]
        if tokens is None:
            _count("lookup.ask_again")
        elif tokens > 0:
            _count("lookup.hit")
            _count("lookup.hit_tokens", tokens)
            _count("lookup.hit_background" if answer[1] else "lookup.hit_in_step")
        else:
            _count("lookup.miss")
        _count("lookup.local_tokens", num_computed_tokens)
        return answer

    return counted


_GC_START: dict[int, float] = {}
_GC_TIMES: collections.deque[tuple[str, float]] = collections.deque()
"""Collections timed by the gc callback, folded into the figures when they are written: the
callback may run inside any allocation, even one made while ``_LOCK`` is held, so it takes no
lock (``deque.append`` is atomic)."""


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    """Times Python's garbage collections, by generation and by whether the thread that ran it is
    one Python started or a foreign one: JPype's reference queue collects all generations from its
    Java thread after each Java GC, holding the GIL meanwhile."""
    ident = threading.get_ident()
    if phase == "start":
        _GC_START[ident] = time.perf_counter()
        return
    start = _GC_START.pop(ident, None)
    if start is None:
        return
    own = ident in _PYTHON_THREADS or ident == threading.main_thread().ident
    where = "python-thread" if own else "foreign-thread"
    if not own and ("engine.step" in _TIMES or "runner.execute_model" in _TIMES):
        where += "-serving"  # after the first step: while requests are served
    _GC_TIMES.append((f"gc.gen{info.get('generation')}.{where}", time.perf_counter() - start))


_PYTHON_THREADS: set[int] = set()
"""Idents of threads started by Python's threading module (filled as they start)."""


def _track_threads() -> None:
    started = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def bootstrap_inner(self: threading.Thread) -> None:
        _PYTHON_THREADS.add(threading.get_ident())
        started(self)

    threading.Thread._bootstrap_inner = bootstrap_inner  # type: ignore[attr-defined]


_HELD: dict[str, float] = {}
"""Requests whose blocks vLLM holds after they finished, until kvtier reports their saves."""


def _held_blocks(cls: Any) -> None:
    """Times how long vLLM keeps a finished request's blocks for kvtier's saves: from
    ``request_finished`` answering True to the ``finished_sending`` that frees them."""
    finished, output = cls.request_finished, cls.update_connector_output

    @functools.wraps(finished)
    def request_finished(self: Any, request: Any) -> bool:
        delay = finished(self, request)
        if delay:
            _HELD[request.request_id] = time.perf_counter()
        return delay

    @functools.wraps(output)
    def update_connector_output(self: Any, connector_output: Any) -> None:
        output(self, connector_output)
        now = time.perf_counter()
        for req_id in connector_output.finished_sending or ():
            start = _HELD.pop(req_id, None)
            if start is not None:
                _add("kvtier.blocks_held_after_finish", now - start)

    cls.request_finished, cls.update_connector_output = request_finished, update_connector_output


def _patch(module_name: str, module: Any) -> None:
    if module_name == "vllm.v1.engine.core":
        _wrap(module.EngineCore, ["step", "step_with_batch_queue"], "engine")
    elif module_name == "vllm.v1.core.sched.scheduler":
        _wrap(module.Scheduler, ["schedule", "update_from_output"], "scheduler")
    elif module_name == "vllm.v1.worker.cpu_model_runner":
        _wrap(module.CPUModelRunner, ["execute_model"], "runner")
    elif module_name == "vllm.v1.worker.gpu_model_runner":
        _wrap(module.GPUModelRunner, ["execute_model", "sample_tokens"], "runner")
    elif module_name == "kvtier.vllm.scheduler":
        cls = module.KVTierScheduler
        cls.get_num_new_matched_tokens = _lookup_answers(cls.get_num_new_matched_tokens)
        _held_blocks(cls)
        _wrap(
            cls,
            ["_look_up", "update_state_after_alloc", "build_connector_meta",
             "update_connector_output", "request_finished", "get_kv_connector_stats"],
            "kvtier.scheduler",
        )  # fmt: skip
    elif module_name == "kvtier.vllm.worker":
        _wrap(
            module.KVTierWorker,
            ["bind", "_start_load", "handle_preemptions", "wait_for_layer_load", "save_kv_layer",
             "wait_for_save", "get_finished", "get_transfer_results", "lookup",
             "get_kv_connector_stats"],
            "kvtier.worker",
        )  # fmt: skip


_TARGETS = {
    "vllm.v1.engine.core",
    "vllm.v1.core.sched.scheduler",
    "vllm.v1.worker.cpu_model_runner",
    "vllm.v1.worker.gpu_model_runner",
    "kvtier.vllm.scheduler",
    "kvtier.vllm.worker",
}


class _Finder:
    """Patches each target module right after it is first imported."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in _TARGETS:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            try:
                _patch(name, module)
            except Exception as e:  # a profile never breaks the server
                _count(f"patch_failed.{name}.{type(e).__name__}")

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _threads() -> dict[str, float]:
    """CPU seconds (user + system) of this process's live threads, summed by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick
        out[name] = out.get(name, 0.0) + cpu
    return out


def _dump(started: float) -> None:
    while _GC_TIMES:
        _add(*_GC_TIMES.popleft())
    with _LOCK:
        times = {k: list(v) for k, v in _TIMES.items()}
        counts = dict(_COUNTS)
    if not times and not counts:
        return
    record = {
        "pid": os.getpid(),
        "argv": sys.argv[:3],
        "seconds": time.monotonic() - started,
        "times": times,
        "counts": counts,
        "threads": _threads(),
    }
    path = os.path.join(_DIR, f"{os.getpid()}.json")  # type: ignore[arg-type]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def _sampler() -> None:
    started = time.monotonic()
    while True:
        time.sleep(2.0)
        try:
            _dump(started)
        except Exception:  # never disturb the server
            pass


def _start_sampler() -> None:
    threading.Thread(target=_sampler, name="kvtier-profile", daemon=True).start()


def _after_fork() -> None:
    """A forked child starts its own figures (and its own sampler: threads do not survive
    fork)."""
    global _LOCK
    _LOCK = threading.Lock()
    _TIMES.clear()
    _COUNTS.clear()
    _start_sampler()


if _DIR:
    import gc

    _track_threads()
    gc.callbacks.append(_gc_callback)
    sys.meta_path.insert(0, _Finder())
    os.register_at_fork(after_in_child=_after_fork)
    _start_sampler()
