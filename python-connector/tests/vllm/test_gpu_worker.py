"""The vLLM worker side on a GPU, without vLLM: ``KVTierWorker`` registers torch CUDA tensors in
vLLM 0.32's GPU layouts (FlashAttention's NHD and FlashInfer's HND, per-layer ``[blocks, heads,
block_size, 2 * head]`` views), then a save and a load driven by real ``KVTierMetadata`` move a
request's KV into other blocks; every token's K and V, read the way FlashAttention reads them,
equal the source's byte for byte. Skipped, with the reason, where there is no usable GPU.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from waiting import wait_until

torch = pytest.importorskip("torch", reason="torch is not installed (it comes with vLLM)")

import layout_cases  # noqa: E402
from layout_cases import BLOCKS, HEAD, HEADS, LAYERS, gpu_unavailable, split_kv  # noqa: E402

from kvtier.vllm.metadata import KVTierMetadata, LoadSpec, RequestOp  # noqa: E402
from kvtier.vllm.worker import KVTierWorker  # noqa: E402

pytestmark = [pytest.mark.gpu]
if (_REASON := gpu_unavailable()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_REASON))

BLOCK = 16
CHUNK = 32


def vllm_config(engine_id: str) -> SimpleNamespace:
    return layout_cases.vllm_config(engine_id, BLOCK, HEADS, HEAD)


@pytest.mark.parametrize("order", ["LBNHC", "LBHNC"], ids=["flash-attn-NHD", "flashinfer-HND"])
def test_save_and_load_move_a_requests_kv_byte_for_byte(order, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KVTIER_RUNTIME_DIR", str(tmp_path))
    views, read = split_kv(order)(BLOCK, torch.bfloat16, seed=1, device="cuda")
    caches = {f"model.layers.{i}.self_attn.attn": v for i, v in enumerate(views)}
    worker = KVTierWorker(vllm_config(f"g{time.monotonic_ns()}"), {"chunk_size": CHUNK})
    try:
        worker.register_kv_caches(caches)
        tokens = np.arange(2 * CHUNK + 5, dtype=np.int32)
        table_a = [7, 1, 5, 3, 9]
        save = RequestOp("a", tokens=tokens, new_blocks=table_a, save_to=2 * CHUNK)
        worker.bind(KVTierMetadata(ops=[save]))
        worker.wait_for_save()
        worker.bind(KVTierMetadata(finished={"a": True}))
        wait_until(lambda: "a" in (worker.get_finished({"a"})[0] or ()), "the save of a reported")
        table_b = [0, 2, 4, 6, 8]
        assert max(table_a + table_b) < BLOCKS
        end = 2 * CHUNK - 1
        load = RequestOp(
            "b", tokens=tokens, new_blocks=table_b, load=LoadSpec(0, end, 2 * CHUNK, False)
        )
        worker.bind(KVTierMetadata(ops=[load]))
        torch.cuda.synchronize()
        assert worker.get_block_ids_with_load_errors() == set()
        for layer in range(LAYERS):
            for t in range(end):
                for kv in (0, 1):
                    a = read(views[layer], kv, table_a[t // BLOCK], t % BLOCK)
                    b = read(views[layer], kv, table_b[t // BLOCK], t % BLOCK)
                    assert torch.equal(a.view(torch.int16), b.view(torch.int16)), (
                        f"layer {layer} token {t} {'KV'[kv]}"
                    )
    finally:
        worker.shutdown()


def test_nothing_is_copied_between_unregister_and_restore(tmp_path, monkeypatch) -> None:
    """Sleep mode on a GPU (vLLM 0.33+): after unregister_kv_caches a load into the KV tensors
    ends as failed and copies nothing (their bytes unchanged while other tensors churn device
    memory); after restore_kv_caches the same load is byte-exact."""
    monkeypatch.setenv("KVTIER_RUNTIME_DIR", str(tmp_path))
    views, read = split_kv("LBNHC")(BLOCK, torch.bfloat16, seed=2, device="cuda")
    caches = {f"model.layers.{i}.self_attn.attn": v for i, v in enumerate(views)}
    worker = KVTierWorker(vllm_config(f"s{time.monotonic_ns()}"), {"chunk_size": CHUNK})
    try:
        worker.register_kv_caches(caches)
        tokens = np.arange(2 * CHUNK, dtype=np.int32)
        table_a, table_b = [7, 1, 5, 3], [0, 2, 4, 6]
        save = RequestOp("a", tokens=tokens, new_blocks=table_a, save_to=2 * CHUNK)
        worker.bind(KVTierMetadata(ops=[save]))
        worker.wait_for_save()
        worker.bind(KVTierMetadata(finished={"a": True}))
        wait_until(lambda: "a" in (worker.get_finished({"a"})[0] or ()), "the save reported")
        worker.unregister_kv_caches()
        snapshot = [v.clone() for v in views]
        scratch = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")  # memory churn
        scratch.fill_(0xAB)
        spec = LoadSpec(0, 2 * CHUNK - 1, 2 * CHUNK, False)
        worker.bind(
            KVTierMetadata(ops=[RequestOp("b", tokens=tokens, new_blocks=table_b, load=spec)])
        )
        torch.cuda.synchronize()
        assert worker.get_block_ids_with_load_errors() == set(table_b)
        assert all(torch.equal(a, b) for a, b in zip(snapshot, views, strict=True))
        del scratch
        worker.restore_kv_caches()
        load = RequestOp("c", tokens=tokens, new_blocks=table_b, load=spec)
        worker.bind(KVTierMetadata(ops=[load]))
        torch.cuda.synchronize()
        assert worker.get_block_ids_with_load_errors() == set()
        for layer in range(LAYERS):
            for t in range(2 * CHUNK - 1):
                for kv in (0, 1):
                    a = read(views[layer], kv, table_a[t // BLOCK], t % BLOCK)
                    b = read(views[layer], kv, table_b[t // BLOCK], t % BLOCK)
                    assert torch.equal(a.view(torch.int16), b.view(torch.int16))
    finally:
        worker.shutdown()
