"""How the vLLM tests, demo and benchmarks pick a dtype and threads (examples/vllm_cpu.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import vllm_cpu

AVX2 = vllm_cpu.Cpu("AMD EPYC", frozenset({"avx", "avx2", "fma"}), (0, 1))
AVX512 = vllm_cpu.Cpu("Xeon", frozenset({"avx2", "avx512f", "avx512bw"}), (0, 1, 2, 3))
AMX = vllm_cpu.Cpu("Xeon SPR", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}), (2, 3))


def test_bfloat16_only_where_the_cpu_multiplies_it_natively(monkeypatch) -> None:
    """AVX2 alone and AVX-512 without its bfloat16 extension get float32; AVX512-BF16 or AMX
    get bfloat16; the reason names the instruction set."""
    monkeypatch.delenv("KVTIER_VLLM_DTYPE", raising=False)
    assert vllm_cpu.choose_dtype(AVX2)[0] == "float32"
    assert "AVX2 only" in vllm_cpu.choose_dtype(AVX2)[1]
    assert vllm_cpu.choose_dtype(AVX512)[0] == "float32"
    why = "AVX-512 + AVX512-BF16 + AMX-BF16: native bfloat16 matmul"
    assert vllm_cpu.choose_dtype(AMX) == ("bfloat16", why)
    monkeypatch.setenv("KVTIER_VLLM_DTYPE", "bfloat16")
    assert vllm_cpu.choose_dtype(AVX2) == ("bfloat16", "set by KVTIER_VLLM_DTYPE")


def test_threading_names_the_cores_explicitly(monkeypatch) -> None:
    """Every core this process may use, bound by id, the same with or without a connector; more
    threads than cores is refused."""
    monkeypatch.delenv("KVTIER_VLLM_THREADS", raising=False)
    expected = {"OMP_NUM_THREADS": "2", "VLLM_CPU_OMP_THREADS_BIND": "2,3"}
    assert vllm_cpu.vllm_env(info=AMX) == expected
    assert vllm_cpu.vllm_env(1, info=AVX512)["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    with pytest.raises(ValueError, match="3 threads asked for; this process may use 2 cores"):
        vllm_cpu.vllm_env(3, info=AVX2)


def test_runs_with_other_threads_or_dtype_are_not_compared() -> None:
    """Runs that agree pass; a run with other threads, another dtype or nothing reported fails
    with a message naming every run's dtype and threads."""
    same = {"dtype": "float32", "threads": [2]}
    vllm_cpu.check_same_runtime({"without kvtier": same, "with kvtier": dict(same)})
    with pytest.raises(AssertionError) as e:
        other = {**same, "threads": [1]}
        vllm_cpu.check_same_runtime({"without kvtier": same, "with kvtier": other})
    assert "without kvtier: dtype float32, threads [2]" in str(e.value)
    assert "with kvtier: dtype float32, threads [1]" in str(e.value)
    with pytest.raises(AssertionError, match="dtype bfloat16"):
        vllm_cpu.check_same_runtime({"a": same, "b": {**same, "dtype": "bfloat16"}})
    with pytest.raises(AssertionError, match="threads \\[\\]"):
        vllm_cpu.check_same_runtime({"a": {"dtype": "float32", "threads": []}})


def test_this_machine_is_described() -> None:
    """The summary printed next to figures names the CPU model, its instruction set, the dtype and
    the thread count."""
    info = vllm_cpu.cpu()
    line = vllm_cpu.summary(info)
    assert info.model in line and info.isa in line and f"{vllm_cpu.threads(info)} threads" in line
