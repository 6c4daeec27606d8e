"""The connector's scheduler side on scripted scheduler outputs (no vLLM needed).

vLLM's objects are stood in for by plain namespaces with the attributes the scheduler side reads;
the lookups are a scripted function. These cover the arithmetic of loads and saves and the events
vLLM's scheduler never causes (refused by the state table); every order vLLM's real scheduler can
drive is covered against it in ``vllm/test_scheduler_contract.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from kvtier.vllm import scheduler as scheduler_module
from kvtier.vllm.scheduler import TRANSITIONS, Event, KVTierScheduler, State

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
        status=SimpleNamespace(name="WAITING"),
        is_finished=lambda: False,
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


class Lookups:
    """A scripted lookup answering ``hit`` and recording the pin ids it was asked with."""

    def __init__(self, hit: tuple[int, int, bool] = (0, 0, False)) -> None:
        self.hit = hit
        self.pins: list[int] = []

    def __call__(self, pin: int, tokens: np.ndarray) -> tuple[int, int, bool]:
        self.pins.append(pin)
        return self.hit


@pytest.fixture
def sched() -> KVTierScheduler:
    s = KVTierScheduler(vllm_config(), {"chunk_size": CHUNK})
    s._lookup = Lookups()
    return s


def admit(s: KVTierScheduler, req: SimpleNamespace, ids: list[int], external: int = 0) -> None:
    """A lookup and a successful allocation, as vLLM admits a waiting request."""
    s.get_num_new_matched_tokens(req, 0)
    s.update_state_after_alloc(req, blocks(ids), external)


def test_chunked_prefill_saves_each_chunk_once_and_sends_only_changes(sched) -> None:
    """A 600-token prompt prefilled 300 tokens a step: step 1 saves chunk 0 with the prompt and
    its blocks, step 2 chunk 1 with only the blocks added since, the tail is never saved."""
    req = request("r", 600)
    admit(sched, req, [7, 3, 9])
    m1 = sched.build_connector_meta(output(new=[("r", [7, 3, 9], 0)], scheduled={"r": 300}))
    (op,) = m1.ops
    assert op.save_to == CHUNK and op.blocks_at == 0 and op.new_blocks == [7, 3, 9]
    assert np.array_equal(op.tokens, np.arange(600)) and op.load is None
    m2 = sched.build_connector_meta(
        output(cached=[("r", [4, 5], 300, False)], scheduled={"r": 300})
    )
    (op,) = m2.ops
    assert op.tokens is None and op.save_to == 2 * CHUNK
    assert (op.blocks_at, op.new_blocks) == (3, [4, 5])
    m3 = sched.build_connector_meta(output(cached=[("r", None, 600, False)], scheduled={"r": 1}))
    assert m3.ops == []
    assert sched.request_finished(req) is True
    assert sched.build_connector_meta(output()).finished == {"r": True}


def test_full_hit_leaves_one_token_and_unused_pins_are_released(sched) -> None:
    """A prompt stored whole loads all but its last token; a hit no larger than what vLLM has
    computed itself loads nothing and the lookup's pins are released."""
    sched._lookup = lookups = Lookups((2 * CHUNK, 2 * CHUNK, False))
    assert sched.get_num_new_matched_tokens(request("a", 2 * CHUNK), 0) == (2 * CHUNK - 1, False)
    assert sched.get_num_new_matched_tokens(request("b", 3 * CHUNK), 2 * CHUNK) == (0, False)
    assert sched.build_connector_meta(output()).unpin == [lookups.pins[1]]


def test_a_lookup_is_only_a_plan_until_the_allocation_confirms_it(sched) -> None:
    """Looked up twice (the first allocation failed: no update_state_after_alloc), then
    confirmed with fewer tokens than offered: only the confirmed tokens load, into the table
    vLLM allocated, and the first lookup's pins are released."""
    sched._lookup = lookups = Lookups((3 * CHUNK, CHUNK, False))
    req = request("d", 3 * CHUNK + 10)
    assert sched.get_num_new_matched_tokens(req, 0) == (3 * CHUNK, True)
    assert sched.build_connector_meta(output()).ops == []
    assert sched.get_num_new_matched_tokens(req, 0) == (3 * CHUNK, True)
    sched.update_state_after_alloc(req, blocks([1, 2, 3]), 3 * CHUNK - 16)
    meta = sched.build_connector_meta(output())
    assert meta.unpin == [lookups.pins[0]]
    (op,) = meta.ops
    assert (op.load.start, op.load.end, op.load.stored) == (0, 3 * CHUNK - 16, 3 * CHUNK)
    assert op.load.background and op.load.pin == lookups.pins[1] and not op.load.failed
    assert op.new_blocks == [1, 2, 3] and op.blocks_at == 0
    assert sched.state_of("d") is State.LOADING
    assert sched.build_connector_meta(output()).ops == [], "a load is sent once"
    assert sched.request_finished(req) is False
    assert sched.state_of("d") is State.FINISHED_LOADING


def test_save_in_progress_asks_vllm_to_wait_then_gives_up(sched, monkeypatch) -> None:
    """The next chunk being stored: None (ask again) until STORING_WAIT_S has passed."""
    clock = [100.0]
    monkeypatch.setattr(scheduler_module.time, "monotonic", lambda: clock[0])
    sched._lookup = Lookups((CHUNK, CHUNK, True))
    req = request("w", 3 * CHUNK)
    assert sched.get_num_new_matched_tokens(req, 0) == (None, False)
    clock[0] += scheduler_module.STORING_WAIT_S + 0.1
    assert sched.get_num_new_matched_tokens(req, 0) == (CHUNK, False)


@pytest.mark.parametrize(
    ("role", "loads", "saves"), [("kv_consumer", True, False), ("kv_producer", False, True)]
)
def test_roles_limit_loads_and_saves(role, loads, saves) -> None:
    s = KVTierScheduler(vllm_config(role), {"chunk_size": CHUNK})
    s._lookup = Lookups((CHUNK, CHUNK, False))
    req = request("x", 2 * CHUNK)
    got, _ = s.get_num_new_matched_tokens(req, 0)
    assert (got > 0) == loads
    s.update_state_after_alloc(req, blocks([1, 2]), got)
    meta = s.build_connector_meta(
        output(new=[("x", [1, 2], got)], scheduled={"x": 2 * CHUNK - got})
    )
    assert any(op.save_to > 0 for op in meta.ops) == saves


def test_save_unfull_chunk_saves_the_tail_once_the_prompt_is_computed() -> None:
    """With save_unfull_chunk a 300-token prompt is saved whole (tail included) once its last
    token is computed, and not before."""
    s = KVTierScheduler(vllm_config(), {"chunk_size": CHUNK, "save_unfull_chunk": True})
    s._lookup = Lookups()
    admit(s, request("t", 300), [1, 2])
    assert s.build_connector_meta(output(new=[("t", [1, 2], 0)], scheduled={"t": 200})).ops == []
    (op,) = s.build_connector_meta(
        output(cached=[("t", None, 200, False)], scheduled={"t": 100})
    ).ops
    assert op.save_to == 300 and op.new_blocks == [1, 2] and op.blocks_at == 0


# ---- events vLLM's scheduler never causes: refused, and turned into misses ----------------------


def test_scheduled_without_an_allocation_sends_nothing(sched) -> None:
    """A request scheduled that kvtier only looked up (vLLM always allocates first) is refused:
    nothing is saved from blocks kvtier was never told of."""
    req = request("s", 3 * CHUNK)
    sched.get_num_new_matched_tokens(req, 0)
    meta = sched.build_connector_meta(output(new=[("s", [1, 2, 3], 0)], scheduled={"s": 600}))
    assert meta.ops == [] and sched.state_of("s") is State.LOOKED_UP


def test_tokens_counted_beyond_the_offer_come_back_as_load_errors(sched) -> None:
    """An allocation counting external tokens kvtier never offered is a failed load: the worker
    reports those tokens' blocks as load errors, so vLLM recomputes them."""
    sched._lookup = Lookups((CHUNK, CHUNK, False))
    req = request("o", 3 * CHUNK)
    assert sched.get_num_new_matched_tokens(req, 0) == (CHUNK, False)
    sched.update_state_after_alloc(req, blocks([4, 5, 6]), 2 * CHUNK)
    (op,) = sched.build_connector_meta(
        output(new=[("o", [4, 5, 6], 2 * CHUNK)], scheduled={"o": CHUNK})
    ).ops
    assert op.load.failed and (op.load.start, op.load.end) == (0, 2 * CHUNK)
    assert op.new_blocks == [4, 5, 6]


def test_preemption_of_a_request_that_is_not_running_changes_nothing(sched) -> None:
    req = request("p", 3 * CHUNK)
    sched.get_num_new_matched_tokens(req, 0)
    meta = sched.build_connector_meta(output(preempted=["p"]))
    assert meta.preempted == [] and sched.state_of("p") is State.LOOKED_UP


def test_lookup_while_loading_is_a_miss(sched) -> None:
    sched._lookup = Lookups((2 * CHUNK, 0, False))
    req = request("l", 2 * CHUNK + 1)
    admit(sched, req, [1, 2], 2 * CHUNK)
    sched.build_connector_meta(output())
    assert sched.get_num_new_matched_tokens(req, 0) == (0, False)
    assert sched.state_of("l") is State.LOADING


def test_preempting_a_loading_request_drops_its_load(sched) -> None:
    """vLLM 0.32 never preempts a request waiting for a background load; reported anyway, the
    workers are told (they wait for the load and do not report it) and the request is looked up
    afresh."""
    sched._lookup = Lookups((2 * CHUNK, 0, False))
    req = request("l", 2 * CHUNK + 1)
    admit(sched, req, [1, 2], 2 * CHUNK)
    sched.build_connector_meta(output())
    assert sched.build_connector_meta(output(preempted=["l"])).preempted == ["l"]
    assert sched.state_of("l") is State.PREEMPTED
    assert sched.get_num_new_matched_tokens(req, 0) == (2 * CHUNK, True)
    assert sched.request_finished(req) is False


def test_every_live_state_has_an_answer_for_request_finished() -> None:
    """request_finished can come in any state: the table has a transition for each live one."""
    live = set(State) - {State.FINISHED_LOADING, State.FINISHED_SAVING}
    assert {s for s in live if (s, Event.FINISHED) in TRANSITIONS} == live


def test_state_table_in_the_docstring_names_every_state() -> None:
    """The table written in TRANSITIONS' docstring has a row for every state."""
    with open(scheduler_module.__file__, encoding="utf-8") as f:
        source = f.read()
    table = source[source.index("TRANSITIONS: dict") :]
    for state in State:
        assert f"\n{state.name} " in table, state
