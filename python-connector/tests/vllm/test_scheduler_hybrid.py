"""kvtier's connector with vLLM's hybrid KV cache manager: a model with a sliding-window layer and
a full-attention layer (two KV cache groups over one memory, each with its own block table),
driven by vLLM 0.32's real ``Scheduler`` and checked by ``engine_loop.py``'s simulated forward,
which reads every position attention would read (for the sliding layer the window of the next
token) in the blocks vLLM gave that layer's group."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (scripts/lib/vllm-env.sh installs it)")

from engine_loop import BLOCK, CHUNK, busy, prompt, store

WINDOW = 40
"""The sliding layer's window in tokens: more than two blocks, less than two chunks."""


def test_vllm_keeps_two_groups_and_kvtier_serves_both(make_loop) -> None:
    loop = make_loop(40, window=WINDOW)
    assert loop.scheduler.kv_cache_manager.num_kv_cache_groups == 2
    assert loop.worker_side.groups.count == 2 and loop.side._group_count == 2


def test_a_stored_prompt_loads_each_groups_blocks_and_generates(make_loop) -> None:
    """The second request loads the stored whole chunks: the full layer every token, the sliding
    layer only its window's blocks (vLLM gives it its null block before them)."""
    loop = make_loop(40, window=WINDOW)
    p = prompt(5 * CHUNK + 5, seed=1)
    store(loop, "first", p)
    loop.add("second", p)
    out = loop.step()
    (op,) = [op for op in out.kv_connector_metadata.ops if op.req_id == "second"]
    sliding, full = op.new_blocks[0::2], op.new_blocks[1::2]
    assert len(sliding) == len(full) == -(-len(p) // BLOCK)
    assert 0 in sliding and 0 not in full, "vLLM's null block only where the window is gone"
    loop.run()
    assert loop.reports.outputs["second"] == [7, 7]
    assert loop.worker_side.stats()["loaded_tokens"] == 5 * CHUNK, "hits are whole chunks"
    assert not loop.reports.load_errors
    loop.assert_idle()


def test_a_long_prefill_over_several_steps_saves_what_each_window_kept(make_loop) -> None:
    """Prefill in steps of one block: vLLM frees the sliding layer's blocks behind the window
    while the prompt is still being computed, and hands them to the next request; every chunk
    stored still loads the right KV."""
    loop = make_loop(40, window=WINDOW, max_batched_tokens=BLOCK)
    p = prompt(6 * CHUNK, seed=2)
    store(loop, "first", p)
    store(loop, "other", prompt(3 * CHUNK, seed=3))
    loop.add("again", [*p, 9, 9])
    loop.run()
    assert loop.reports.outputs["again"] == [7, 7]
    assert loop.worker_side.stats()["loaded_tokens"] >= 6 * CHUNK
    assert not loop.reports.load_errors
    loop.assert_idle()


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_many_requests_sharing_prefixes_in_a_cache_smaller_than_the_working_set(
    make_loop, async_scheduling
) -> None:
    """Requests sharing a few prefixes arrive faster than a small cache holds them (vLLM
    preempts, and reuses the sliding layer's freed blocks at once), some are aborted: vLLM never
    fails, every request that is not aborted generates with the right KV in both groups, and
    everything is released at the end."""
    loop = make_loop(24, window=WINDOW, async_scheduling=async_scheduling, max_batched_tokens=64)
    busy(loop, requests=30, seed=6)


def test_the_worker_stops_reading_the_sliding_blocks_vllm_may_have_freed(make_loop) -> None:
    """Blocks wholly before the window of the next token (vLLM frees them without telling
    connectors) become the null block in the worker's table; the full group's stay."""
    loop = make_loop(40, window=WINDOW)
    table = [11, 21, 12, 22, 13, 23, 14, 24, 15, 25]  # sliding, full, block by block
    computed = 3 * BLOCK + WINDOW - 1  # the window of the next token starts at block 3
    loop.worker_side._forget_slid_out(table, computed)
    assert table == [0, 21, 0, 22, 0, 23, 14, 24, 15, 25]
