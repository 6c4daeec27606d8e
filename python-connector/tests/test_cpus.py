"""Which CPUs kvtier's JVM threads run on: parsing, the choice, and real threads in a JVM started
from a thread bound to one core, as vLLM's CPU worker binds the thread that starts it."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_python

from kvtier import ConfigError, _cpus


@pytest.mark.parametrize(
    ("text", "cpus", "canonical"),
    [("0", {0}, "0"), ("0-3,8", {0, 1, 2, 3, 8}, "0-3,8"), (" 5 , 1-2 ", {1, 2, 5}, "1-2,5")],
)
def test_cpu_lists_parse_and_format(text, cpus, canonical):
    assert _cpus.parse_list(text) == cpus
    assert _cpus.format_list(_cpus.parse_list(text)) == canonical


@pytest.mark.parametrize("text", ["", "a", "3-1", "1-", "2000", "0;1"])
def test_malformed_cpu_list_is_a_config_error_naming_the_variable(text):
    with pytest.raises(ConfigError, match="KVTIER_CPUS"):
        _cpus.parse_list(text)


@pytest.mark.parametrize(
    ("env", "bound"),
    [
        ({"GOMP_CPU_AFFINITY": "0 1"}, {0, 1}),  # what vLLM 0.32 sets with libgomp preloaded
        ({"GOMP_CPU_AFFINITY": "0-3 8"}, {0, 1, 2, 3, 8}),
        ({"OMP_PLACES": "{0,1}", "OMP_PROC_BIND": "true"}, {0, 1}),
        ({"OMP_PLACES": "{4:4}"}, {4, 5, 6, 7}),
        ({"OMP_PLACES": "cores"}, set()),
        ({"KMP_AFFINITY": "granularity=fine,explicit,proclist=[2,3]"}, {2, 3}),
        ({"VLLM_CPU_OMP_THREADS_BIND": "0-3|4-7"}, set(range(8))),
        ({"VLLM_CPU_OMP_THREADS_BIND": "auto"}, set()),
        ({}, set()),
    ],
)
def test_openmp_binding_is_read_from_the_variables_vllm_sets(env, bound):
    assert _cpus.openmp_cpus(env) == bound


def test_choice_prefers_the_cpus_openmp_leaves_free(monkeypatch):
    """With vLLM's automatic binding on 8 CPUs (compute on 0-5), kvtier gets 6-7; with every CPU
    bound (a 2-core machine), it gets all; KVTIER_CPUS wins, within what the process may use."""
    monkeypatch.setattr(_cpus, "allowed_cpus", lambda: frozenset(range(8)))
    monkeypatch.delenv("KVTIER_CPUS", raising=False)
    monkeypatch.setenv("GOMP_CPU_AFFINITY", "0 1 2 3 4 5")
    assert _cpus.choose()[0] == {6, 7}
    monkeypatch.setenv("GOMP_CPU_AFFINITY", "0-7")
    assert _cpus.choose()[0] == set(range(8))
    monkeypatch.delenv("GOMP_CPU_AFFINITY")
    assert _cpus.choose() == (frozenset(range(8)), "every CPU this process may use")
    monkeypatch.setenv("KVTIER_CPUS", "7-9")
    assert _cpus.choose() == ({7}, "KVTIER_CPUS")
    monkeypatch.setenv("KVTIER_CPUS", "9-12")
    with pytest.raises(ConfigError, match="names no CPU this process may use"):
        _cpus.choose()


def test_allowed_cpus_include_this_process_affinity():
    assert set(os.sched_getaffinity(0)) <= _cpus.allowed_cpus()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_jvm_threads_leave_the_core_the_starting_thread_is_bound_to():
    """The main thread is bound to its first CPU, as vLLM's OpenMP binding does, before the JVM
    starts; the JVM's own threads and kvtier's threads (a disk tier's I/O workers, started later
    from that same bound thread) run on every CPU, and the bound thread keeps its one core."""
    code = """
        import json, os, tempfile, time
        cpus = sorted(os.sched_getaffinity(0))
        os.environ["GOMP_CPU_AFFINITY"] = " ".join(map(str, cpus))
        os.sched_setaffinity(0, {cpus[0]})
        from kvtier import _jvm
        from kvtier.engine import Engine, Layout
        _jvm.start()
        layout = Layout(model_id="m", kv_dtype="float32", num_layers=2, kv_heads_per_rank=1,
                        head_size=4, bytes_per_token=2 * 2 * 4 * 4)
        engine = Engine(layout, {"local_disk": tempfile.mkdtemp(), "max_local_disk_size": 0.01,
                                 "max_local_cpu_size": 0.01})
        threads = {}
        for tid in os.listdir("/proc/self/task"):
            status = dict(line.split(":\\t", 1) for line in
                          open(f"/proc/self/task/{tid}/status").read().splitlines()
                          if ":\\t" in line)
            threads[status["Name"]] = status["Cpus_allowed_list"]
        print(json.dumps({"main": sorted(os.sched_getaffinity(0)), "all": cpus,
                          "threads": threads}))
        engine.close()
    """
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    every = _cpus.format_list(set(seen["all"]))
    assert seen["main"] == seen["all"][:1]
    assert seen["threads"]["C2 CompilerThre"] == every
    kvtier_threads = {n: c for n, c in seen["threads"].items() if n.startswith("kvtier-")}
    assert any(n.startswith("kvtier-disk") for n in kvtier_threads), seen["threads"]
    assert set(kvtier_threads.values()) == {every}, kvtier_threads
