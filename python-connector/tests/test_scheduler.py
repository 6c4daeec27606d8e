"""The connector's scheduler side on scripted scheduler outputs (no vLLM needed).

vLLM's objects are stood in for by plain namespaces with the attributes the scheduler side reads;
the lookups are a scripted function. The end-to-end tests run the same code inside real vLLM.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from kvtier.vllm import scheduler as scheduler_module
from kvtier.vllm.scheduler import KVTierScheduler

CHUNK = 256


def vllm_config(role: str = "kv_both", ranks: int = 1) -> SimpleNamespace:
    return SimpleNamespace(
        kv_transfer_config=SimpleNamespace(kv_role=role, engine_id="test-engine"),
        parallel_config=SimpleNamespace(world_size=ranks),
    )


def request(req_id: str, n: int, num_tokens: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        request_id=req_id,
        prompt_token_ids=list(range(n)),
        num_tokens=num_tokens if num_tokens is not None else n,
    )


def blocks(ids: list[int]) -> SimpleNamespace:
    return SimpleNamespace(get_block_ids=lambda: (ids,))


def output(new=(), cached=(), scheduled=None, preempted=()) -> SimpleNamespace:
    """A scheduler output: ``new`` as (req_id, block ids, computed), ``cached`` as (req_id, new
    block ids or None, computed, resumed); ``scheduled`` maps req_id to tokens this step."""
    cached = list(cached)
    return SimpleNamespace(
        scheduled_new_reqs=[
            SimpleNamespace(req_id=r, block_ids=(b,), num_computed_tokens=c) for r, b, c in new
        ],
        scheduled_cached_reqs=SimpleNamespace(
            req_ids=[c[0] for c in cached],
            new_block_ids=[(c[1],) if c[1] is not None else None for c in cached],
            num_computed_tokens=[c[2] for c in cached],
            resumed_req_ids={c[0] for c in cached if c[3]},
        ),
        num_scheduled_tokens=dict(scheduled or {}),
        preempted_req_ids=set(preempted),
    )


@pytest.fixture
def sched() -> KVTierScheduler:
    s = KVTierScheduler(vllm_config(), {"chunk_size": CHUNK})
    s._lookup = lambda java_id, tokens: (0, 0, False)
    return s


def test_chunked_prefill_saves_each_chunk_once_and_sends_only_changes(sched) -> None:
    """A 600-token prompt prefilled 300 tokens a step: step 1 saves chunk 0 with the prompt and
    its blocks, step 2 chunk 1 with only the blocks added since, the tail is never saved."""
    req = request("r", 600)
    assert sched.get_num_new_matched_tokens(req, 0) == (0, False)
    m1 = sched.build_connector_meta(output(new=[("r", [7, 3, 9], 0)], scheduled={"r": 300}))
    (op,) = m1.ops
    assert op.save_to == CHUNK and op.blocks_at == 0 and op.new_blocks == [7, 3, 9]
    assert np.array_equal(op.tokens, np.arange(600)) and op.reports_finish
    m2 = sched.build_connector_meta(
        output(cached=[("r", [4, 5], 300, False)], scheduled={"r": 300})
    )
    (op,) = m2.ops
    assert op.tokens is None and op.save_to == 2 * CHUNK
    assert (op.blocks_at, op.new_blocks) == (3, [4, 5])
    m3 = sched.build_connector_meta(output(cached=[("r", None, 600, False)], scheduled={"r": 1}))
    assert m3.ops == []
    assert sched.request_finished(req) is True


def test_full_hit_leaves_one_token_and_pins_are_dropped_when_unused(sched) -> None:
    """A prompt stored whole loads all but its last token; a hit no larger than what vLLM has
    computed itself loads nothing and its pins are released."""
    sched._lookup = lambda java_id, tokens: (2 * CHUNK, 2 * CHUNK, False)
    assert sched.get_num_new_matched_tokens(request("a", 2 * CHUNK), 0) == (2 * CHUNK - 1, False)
    assert sched.get_num_new_matched_tokens(request("b", 3 * CHUNK), 2 * CHUNK) == (0, False)
    meta = sched.build_connector_meta(output())
    assert meta.unpin == [sched._requests["b"].java_id]


def test_hit_beyond_memory_loads_in_the_background_with_its_own_block_table(sched) -> None:
    """Part of the hit on disk: load_async, and the load goes out with the table allocated for
    it even though the request is not scheduled in that step."""
    sched._lookup = lambda java_id, tokens: (3 * CHUNK, CHUNK, False)
    req = request("d", 3 * CHUNK + 10)
    assert sched.get_num_new_matched_tokens(req, 0) == (3 * CHUNK, True)
    sched.update_state_after_alloc(req, blocks([1, 2, 3, 4]), 3 * CHUNK)
    (op,) = sched.build_connector_meta(output()).ops
    assert op.load.background and (op.load.start, op.load.end, op.load.stored) == (0, 768, 768)
    assert op.new_blocks == [1, 2, 3, 4] and op.reports_finish
    assert sched.build_connector_meta(output()).ops == [], "a load is sent once"


def test_preempted_request_gets_its_table_replaced_on_resume(sched) -> None:
    req = request("p", 700)
    sched.get_num_new_matched_tokens(req, 0)
    sched.build_connector_meta(output(new=[("p", [1, 2], 0)], scheduled={"p": 256}))
    meta = sched.build_connector_meta(output(preempted=["p"]))
    assert meta.preempted == ["p"]
    (op,) = sched.build_connector_meta(
        output(cached=[("p", [8, 9, 10, 11], 0, True)], scheduled={"p": 512})
    ).ops
    assert (op.blocks_at, op.new_blocks, op.save_to) == (0, [8, 9, 10, 11], 2 * CHUNK)


def test_save_in_progress_asks_vllm_to_wait_then_gives_up(sched, monkeypatch) -> None:
    """The next chunk being stored: None (ask again) until STORING_WAIT_S has passed."""
    clock = [100.0]
    monkeypatch.setattr(scheduler_module.time, "monotonic", lambda: clock[0])
    sched._lookup = lambda java_id, tokens: (CHUNK, CHUNK, True)
    req = request("w", 3 * CHUNK)
    assert sched.get_num_new_matched_tokens(req, 0) == (None, False)
    clock[0] += scheduler_module.STORING_WAIT_S + 0.1
    assert sched.get_num_new_matched_tokens(req, 0) == (CHUNK, False)


def test_failed_lookup_is_a_miss(sched) -> None:
    from kvtier.vllm._lookup import LookupUnavailable

    def down(java_id, tokens):
        raise LookupUnavailable("lookup server /nowhere.sock: connection refused")

    sched._lookup = down
    assert sched.get_num_new_matched_tokens(request("f", 4 * CHUNK), 0) == (0, False)


@pytest.mark.parametrize(
    ("role", "loads", "saves"), [("kv_consumer", True, False), ("kv_producer", False, True)]
)
def test_roles_limit_loads_and_saves(role, loads, saves) -> None:
    s = KVTierScheduler(vllm_config(role), {"chunk_size": CHUNK})
    s._lookup = lambda java_id, tokens: (CHUNK, CHUNK, False)
    got, _ = s.get_num_new_matched_tokens(request("x", 2 * CHUNK), 0)
    assert (got > 0) == loads
    meta = s.build_connector_meta(output(new=[("x", [1, 2], 0)], scheduled={"x": 2 * CHUNK}))
    assert any(op.save_to > 0 for op in meta.ops) == saves


def test_save_unfull_chunk_saves_the_tail_once_the_prompt_is_computed() -> None:
    """With save_unfull_chunk a 300-token prompt is saved whole (tail included) once its last
    token is computed, and not before."""
    s = KVTierScheduler(vllm_config(), {"chunk_size": CHUNK, "save_unfull_chunk": True})
    s._lookup = lambda java_id, tokens: (0, 0, False)
    s.get_num_new_matched_tokens(request("t", 300), 0)
    assert s.build_connector_meta(output(new=[("t", [1, 2], 0)], scheduled={"t": 200})).ops == []
    (op,) = s.build_connector_meta(
        output(cached=[("t", None, 200, False)], scheduled={"t": 100})
    ).ops
    assert op.save_to == 300 and op.new_blocks == [1, 2] and op.blocks_at == 0
