"""The worker side through vLLM 0.33/0.34's lifecycle, on CPU tensors in vLLM's CPU layout:
unregistering the KV cache (sleep mode, a weight update that borrows its memory) and restoring it,
and Model Runner V2's order, where finished and load-error reports are asked before
``wait_for_save``."""

from __future__ import annotations

import numpy as np
import pytest
from test_worker_layout import (
    BLOCK,
    BLOCKS,
    CHUNK,
    HEAD,
    HEADS,
    caches,
    finish,
    kv_rows,
    vllm_config,
)

torch = pytest.importorskip("torch", reason="torch is not installed (it comes with vLLM)")

from kvtier import _jvm  # noqa: E402
from kvtier.vllm.metadata import KVTierMetadata, LoadSpec, RequestOp  # noqa: E402
from kvtier.vllm.worker import KVTierWorker  # noqa: E402


def save(w: KVTierWorker, req_id: str, tokens: np.ndarray, table: list[int], to: int) -> None:
    w.bind(KVTierMetadata(ops=[RequestOp(req_id, tokens=tokens, new_blocks=table, save_to=to)]))
    w.wait_for_save()
    finish(w, req_id)


def same_kv(src: dict, table_a: list[int], table_b: list[int], tokens: int) -> bool:
    return all(
        all(
            torch.equal(x, y)
            for x, y in zip(kv_rows(c, table_a, t), kv_rows(c, table_b, t), strict=True)
        )
        for c in src.values()
        for t in range(tokens)
    )


def test_unregistered_kv_cache_is_never_copied_and_restore_resumes(worker: KVTierWorker) -> None:
    """Between unregister and restore a load ends as failed (its blocks reported, their bytes
    untouched) and a save is dropped, both counted; after restore the same load is byte-exact."""
    src = caches(5)
    worker.register_kv_caches(src)
    tokens = np.arange(3 * CHUNK, dtype=np.int32)
    table_a = [0, 1, 2, 3, 4, 5]
    save(worker, "a", tokens, table_a, 3 * CHUNK)

    worker.unregister_kv_caches()
    worker.unregister_kv_caches()  # idempotent
    target = [10, 11, 12, 13, 14, 15]
    before = {n: c[target].clone() for n, c in src.items()}
    spec = LoadSpec(0, 3 * CHUNK - 1, 3 * CHUNK, False)
    worker.bind(KVTierMetadata(ops=[RequestOp("b", tokens=tokens, new_blocks=target, load=spec)]))
    assert worker.get_block_ids_with_load_errors() == set(target)
    assert all(torch.equal(before[n], c[target]) for n, c in src.items()), "copied while away"
    other = np.arange(1000, 1000 + 2 * CHUNK, dtype=np.int32)
    op = RequestOp("c", tokens=other, new_blocks=[16, 17, 18, 19], save_to=2 * CHUNK)
    worker.bind(KVTierMetadata(ops=[op]))
    worker.wait_for_save()
    assert worker.lookup(9, other) == (0, 0, False, False, 0), (
        "a save while unregistered is dropped"
    )
    assert worker.stats()["unregistered_misses"] == 2

    worker.restore_kv_caches()
    spec = LoadSpec(0, 3 * CHUNK - 1, 3 * CHUNK, False)
    worker.bind(KVTierMetadata(ops=[RequestOp("d", tokens=tokens, new_blocks=target, load=spec)]))
    assert worker.get_block_ids_with_load_errors() == set()
    assert same_kv(src, table_a, target, 3 * CHUNK - 1)


def test_unregister_waits_for_background_copies(worker: KVTierWorker) -> None:
    """A background load still running when vLLM unregisters the cache has ended when
    unregister returns: nothing copies into memory vLLM is about to release."""
    worker.register_kv_caches(caches(6))
    tokens = np.arange(3 * CHUNK, dtype=np.int32)
    save(worker, "s", tokens, list(range(6)), 3 * CHUNK)
    spec = LoadSpec(0, 3 * CHUNK - 1, 3 * CHUNK, background=True)
    worker.bind(
        KVTierMetadata(
            ops=[RequestOp("b", tokens=tokens, new_blocks=list(range(8, 14)), load=spec)]
        )
    )
    tickets = list(worker._requests["b"].tickets)
    assert tickets, "the load runs in the background"
    worker.unregister_kv_caches()
    assert worker._worker.awaitTickets(_jvm.long_array(np.array(tickets)), 0)


def run_steps(w: KVTierWorker, model_runner_v2: bool) -> dict:
    """One save, then a step with a load that hits and one that misses, in vLLM 0.32's order
    (wait_for_save, then reports) or Model Runner V2's (reports, then wait_for_save)."""
    src = caches(7)
    w.register_kv_caches(src)
    tokens = np.arange(3 * CHUNK, dtype=np.int32)
    table = [0, 1, 2, 3, 4, 5]
    w.bind(KVTierMetadata(ops=[RequestOp("a", tokens=tokens, new_blocks=table, save_to=3 * CHUNK)]))
    w.wait_for_save()
    w.bind(KVTierMetadata(finished={"a": True}))
    finished: set[str] = set()
    for _ in range(10_000):  # a step at a time until the save is reported (bounded)
        sending, _ = w.get_finished(set())
        finished |= sending or set()
        if "a" in finished:
            break
        w._worker.awaitTickets(_jvm.long_array(np.array(list(w._tickets) or [0])), 1000)
    hit = LoadSpec(0, 2 * CHUNK, 3 * CHUNK, False)
    miss = LoadSpec(0, 2 * CHUNK, 2 * CHUNK, False)
    other = np.arange(500, 500 + 2 * CHUNK, dtype=np.int32)
    w.bind(
        KVTierMetadata(
            ops=[
                RequestOp("h", tokens=tokens, new_blocks=[10, 11, 12, 13], load=hit),
                RequestOp("m", tokens=other, new_blocks=[14, 15, 16, 17], load=miss),
            ]
        )
    )
    if model_runner_v2:
        reports = (w.get_finished(set()), w.get_block_ids_with_load_errors())
        w.wait_for_save()
    else:
        w.wait_for_save()
        reports = (w.get_finished(set()), w.get_block_ids_with_load_errors())
    return {
        "finished": finished,
        "step": reports,
        "bytes": same_kv(src, table, [10, 11, 12, 13], 2 * CHUNK),
    }


def test_model_runner_v2_order_gives_the_same_results(tmp_path, monkeypatch) -> None:
    results = []
    for i, v2 in enumerate((False, True)):
        monkeypatch.setenv("KVTIER_RUNTIME_DIR", str(tmp_path / str(i)))
        (tmp_path / str(i)).mkdir()
        w = KVTierWorker(vllm_config(f"order{i}"), {"chunk_size": CHUNK})
        try:
            results.append(run_steps(w, v2))
        finally:
            w.shutdown()
    old, v2 = results
    assert old == v2
    assert old["finished"] == {"a"} and old["bytes"]
    assert old["step"][1] == {14, 15, 16, 17}, "the missing load's blocks, in the same step"


def test_failures_found_at_start_reach_the_first_report(tmp_path, monkeypatch) -> None:
    """A partial file left by a process killed mid-write is removed when the disk tier opens, and
    counted: the count reaches vLLM's metrics with the worker's first report."""
    monkeypatch.setenv("KVTIER_RUNTIME_DIR", str(tmp_path))
    disk = tmp_path / "kv"
    (disk / "00000000000000ab" / "cd").mkdir(parents=True)
    partial = disk / "00000000000000ab" / "cd" / ("cd" + "0" * 30 + ".kvc.0123456789abcdef.tmp")
    partial.write_bytes(b"\1" * 4096)
    settings = {"chunk_size": CHUNK, "local_disk": str(disk), "max_local_disk_size": 0.01}
    w = KVTierWorker(vllm_config("start-errors"), settings)
    try:
        w.register_kv_caches(caches(3))
        assert not partial.exists()
        report = w.get_kv_connector_stats()
        assert report is not None
        assert report.data["counters"].get("kvtier_errors") == {"disk,partial_file": 1}
    finally:
        w.shutdown()


def test_a_sliding_window_models_saves_are_copied_before_the_step_ends(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every layer slides: vLLM may hand a request's blocks that slid out of its window to
    another request in the very next step, which overwrites them. The chunks saved in a step are
    copied by the time ``wait_for_save`` returns, so they load byte for byte after the blocks were
    overwritten; a load skips the null block (id 0) that stands where the window no longer
    reaches."""
    from vllm.v1 import kv_cache_interface as kv

    monkeypatch.setenv("KVTIER_RUNTIME_DIR", str(tmp_path))
    src = caches(8)
    spec = kv.SlidingWindowSpec(
        BLOCK, num_kv_heads=HEADS, head_size=HEAD, dtype=torch.bfloat16, sliding_window=40
    )
    groups = kv.KVCacheConfig(
        num_blocks=BLOCKS,
        kv_cache_tensors=[],
        kv_cache_groups=[kv.KVCacheGroupSpec(list(src), spec)],
    )
    worker = KVTierWorker(vllm_config("sliding"), {"chunk_size": CHUNK}, groups)
    try:
        worker.register_kv_caches(src)
        tokens = np.arange(3 * CHUNK, dtype=np.int32)
        table = [1, 2, 3, 4, 5, 6]
        saved = {n: c[table].clone() for n, c in src.items()}
        op = RequestOp("a", tokens=tokens, new_blocks=table, save_to=3 * CHUNK)
        worker.bind(KVTierMetadata(ops=[op]))
        worker.wait_for_save()
        for c in src.values():
            c[table] = 0  # the next step's requests write into the blocks
        assert worker.lookup(9, tokens)[0] == 3 * CHUNK
        null = {n: c[0].clone() for n, c in src.items()}
        target = [0, 0, 0, 0, 10, 11]  # the window of a hit at 192 tokens: its last 2 blocks
        spec = LoadSpec(0, 3 * CHUNK, 3 * CHUNK, False)
        worker.bind(
            KVTierMetadata(ops=[RequestOp("b", tokens=tokens, new_blocks=target, load=spec)])
        )
        assert worker.get_block_ids_with_load_errors() == set()
        for name, c in src.items():
            assert torch.equal(c[[10, 11]], saved[name][[4, 5]]), name
            assert torch.equal(c[0], null[name]), "written into the null block"
    finally:
        worker.shutdown()


def test_set_up_in_vllms_processes_runs_without_python_collections(
    make_loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sides' construction and the KV cache's registration run with Python's collector
    paused (JPype's wrappers made each full collection walk every object of vLLM's process), and
    it is on again afterwards."""
    import gc

    from kvtier.vllm.scheduler import KVTierScheduler

    seen: dict[str, bool] = {}

    def recorded(cls: type, name: str, label: str) -> None:
        original = getattr(cls, name)

        def call(self, *args, **kwargs):
            seen[label] = gc.isenabled()
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, call)

    recorded(KVTierWorker, "__init__", "worker")
    recorded(KVTierWorker, "register_kv_caches", "register")
    recorded(KVTierScheduler, "__init__", "scheduler")
    assert gc.isenabled()
    make_loop(64)
    assert seen == {"worker": False, "register": False, "scheduler": False}
    assert gc.isenabled()
