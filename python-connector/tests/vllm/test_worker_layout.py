"""The worker side against torch tensors in vLLM's CPU-backend KV layout, without vLLM itself.

The K and V rows are written and read through the same view vLLM's CPU attention uses
(``[blocks, heads, 2 * block_size, head_size]`` split in two along dim 2), so a layout mistake in
kvtier shows up as a byte mismatch here.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from waiting import wait_until

torch = pytest.importorskip("torch", reason="torch is not installed (it comes with vLLM)")

import layout_cases  # noqa: E402

from kvtier import _jvm  # noqa: E402
from kvtier.vllm.metadata import KVTierMetadata, LoadSpec, RequestOp  # noqa: E402
from kvtier.vllm.worker import KVTierWorker, detect_layout  # noqa: E402

LAYERS, BLOCKS, HEADS, BLOCK, HEAD = 3, 24, 2, 32, 64
CHUNK = 64


def vllm_config(engine_id: str) -> SimpleNamespace:
    return layout_cases.vllm_config(engine_id, BLOCK, HEADS, HEAD)


def caches(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        f"model.layers.{i}.self_attn.attn": torch.randn(
            BLOCKS, HEADS, BLOCK, 2 * HEAD, generator=g
        ).to(torch.bfloat16)
        for i in range(LAYERS)
    }


def kv_rows(cache: torch.Tensor, table: list[int], t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V of prompt token ``t`` (every head), read the way vLLM's CPU attention reads them."""
    view = cache.view(BLOCKS, HEADS, 2 * BLOCK, HEAD)
    key, value = view.chunk(2, dim=2)
    block, slot = table[t // BLOCK], t % BLOCK
    return key[block, :, slot, :], value[block, :, slot, :]


def finish(worker: KVTierWorker, req_id: str) -> None:
    """Tells the worker the request finished with its blocks held, and waits for its report."""
    worker.bind(KVTierMetadata(finished={req_id: True}))

    def reported() -> bool:
        sending, _ = worker.get_finished({req_id})
        return bool(sending and req_id in sending)

    wait_until(reported, f"{req_id} reported finished")


def test_saved_tokens_load_into_other_blocks_as_vllm_reads_them(worker: KVTierWorker) -> None:
    """A request's 3 chunks saved from one set of blocks load into another set; every token's K
    and V, in every layer and head, equal the source's when read through vLLM's view."""
    src = caches(1)
    worker.register_kv_caches(src)
    tokens = np.random.default_rng(0).integers(0, 30_000, 3 * CHUNK + 10, dtype=np.int32)
    table_a = [5, 0, 17, 3, 9, 12, 20]
    save = RequestOp("a", tokens=tokens, new_blocks=table_a, save_to=3 * CHUNK)
    worker.bind(KVTierMetadata(ops=[save]))
    worker.wait_for_save()
    finish(worker, "a")
    assert worker.lookup(2, tokens) == (3 * CHUNK, 3 * CHUNK, False, False, 3 * CHUNK)

    # Load into other blocks of the same tensors, then compare token by token.
    table_b = [1, 2, 4, 6, 7, 8, 10]
    load = RequestOp(
        "b", tokens=tokens, new_blocks=table_b, load=LoadSpec(0, 3 * CHUNK - 1, 3 * CHUNK, False)
    )
    worker.bind(KVTierMetadata(ops=[load]))
    assert worker.get_block_ids_with_load_errors() == set()
    for name in src:
        for t in range(3 * CHUNK - 1):
            k_a, v_a = kv_rows(src[name], table_a, t)
            k_b, v_b = kv_rows(src[name], table_b, t)
            assert torch.equal(k_a, k_b), f"{name} K of token {t}"
            assert torch.equal(v_a, v_b), f"{name} V of token {t}"


def test_missing_chunk_reports_its_blocks_as_load_errors(worker: KVTierWorker) -> None:
    """A load asked for more than is stored fills what exists and reports the remaining blocks."""
    worker.register_kv_caches(caches(3))
    tokens = np.arange(4 * CHUNK, dtype=np.int32)
    table = list(range(8))
    save = RequestOp("s", tokens=tokens, new_blocks=table, save_to=CHUNK)
    worker.bind(KVTierMetadata(ops=[save]))
    worker.wait_for_save()
    finish(worker, "s")
    target = [10, 11, 12, 13, 14, 15, 16, 17]
    load = RequestOp(
        "l", tokens=tokens, new_blocks=target, load=LoadSpec(0, 3 * CHUNK, 3 * CHUNK, False)
    )
    worker.bind(KVTierMetadata(ops=[load]))
    assert worker.get_block_ids_with_load_errors() == {12, 13, 14, 15}


def test_background_load_of_a_preempted_request_is_waited_for_and_not_reported(
    worker: KVTierWorker,
) -> None:
    """vLLM 0.32 never preempts a request waiting for a background load; if a vLLM does, it frees
    the blocks and does not wait for the load: the worker waits for the load before the step goes
    on and never reports it in finished_recving."""
    worker.register_kv_caches(caches(4))
    tokens = np.arange(3 * CHUNK, dtype=np.int32)
    save = RequestOp("s", tokens=tokens, new_blocks=list(range(6)), save_to=3 * CHUNK)
    worker.bind(KVTierMetadata(ops=[save]))
    worker.wait_for_save()
    finish(worker, "s")
    spec = LoadSpec(0, 3 * CHUNK - 1, 3 * CHUNK, background=True)
    load = RequestOp("b", tokens=tokens, new_blocks=list(range(8, 14)), load=spec)
    worker.bind(KVTierMetadata(ops=[load]))
    (ticket,) = worker._requests["b"].tickets
    preempted = KVTierMetadata(preempted=["b"])
    worker.handle_preemptions(preempted)
    assert worker._worker.awaitTickets(_jvm.long_array(np.array([ticket])), 0), "waited for"
    worker.bind(preempted)
    _, recving = worker.get_finished(set())
    assert not recving and not worker._tickets


@pytest.mark.parametrize(
    "shape",
    [
        (3, BLOCKS, BLOCK, HEADS, HEAD),  # no K/V dimension of 2
        (BLOCKS, HEADS, BLOCK, HEAD),  # K only
        (BLOCKS, HEADS + 1, BLOCK, 2 * HEAD),  # heads of another model
        (BLOCKS, HEADS, 2 * BLOCK, 2 * HEAD),  # another block size
    ],
)
def test_unknown_layouts_are_refused_naming_what_was_seen(shape) -> None:
    """A shape that fits no layout with vLLM's geometry is refused with what was seen."""
    config = vllm_config("x")
    with pytest.raises(ValueError, match="unknown KV cache layout") as e:
        detect_layout({"l0": torch.zeros(shape, dtype=torch.bfloat16)}, config)
    assert str(tuple(shape)) in str(e.value)
    assert f"[num_blocks, {HEADS}, {BLOCK}, {2 * HEAD}]" in str(e.value)


def test_non_contiguous_and_unsupported_device_tensors_are_refused() -> None:
    config = vllm_config("x")
    t = torch.zeros(BLOCKS, HEADS, 2 * BLOCK, 2 * HEAD, dtype=torch.bfloat16)[:, :, ::2]
    with pytest.raises(ValueError, match="not contiguous"):
        detect_layout({"l0": t}, config)
    meta = torch.empty(BLOCKS, HEADS, BLOCK, 2 * HEAD, dtype=torch.bfloat16, device="meta")
    with pytest.raises(ValueError, match="on meta"):
        detect_layout({"l0": meta}, config)
    with pytest.raises(ValueError, match="differ between layers"):
        detect_layout({"l0": caches(1)["model.layers.0.self_attn.attn"], "l1": t}, config)
    with pytest.raises(ValueError, match=r"dtype torch\.float64 is not moved"):
        detect_layout({"l0": torch.zeros(BLOCKS, HEADS, BLOCK, 2 * HEAD, dtype=torch.float64)},
                      config)  # fmt: skip
