"""The connector's scheduler side on scripted scheduler outputs.

Requests are vLLM's own ``Request`` objects; scheduler outputs are plain namespaces with the
attributes the scheduler side reads; the lookups are a scripted function. These cover the
arithmetic of loads and saves, the keys, and the events vLLM's scheduler never causes (refused
by the state table); every order vLLM's real scheduler can drive is covered against it in
``vllm/test_scheduler_contract.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("vllm", reason="the scheduler side keys vLLM's requests")

from vllm import SamplingParams
from vllm.v1.request import Request

from kvtier.vllm import scheduler as scheduler_module
from kvtier.vllm.metadata import KVTierWorkerMetadata
from kvtier.vllm.scheduler import TRANSITIONS, Event, KVTierScheduler, State

CHUNK = 256
BLOCK = 16


def vllm_config(role: str = "kv_both", ranks: int = 1, block: int = 16) -> SimpleNamespace:
    return SimpleNamespace(
        kv_transfer_config=SimpleNamespace(kv_role=role, engine_id="test-engine"),
        parallel_config=SimpleNamespace(world_size=ranks),
        cache_config=SimpleNamespace(block_size=block),
    )


def request(req_id: str, n: int, **kwargs) -> Request:
    """vLLM's request for the prompt ``0, 1, ..., n-1`` (``kwargs``: LoRA, salt, images...)."""
    return Request(req_id, list(range(n)), SamplingParams(max_tokens=16), None, **kwargs)


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
    """A scripted lookup answering ``hit`` (and ``pending``: a remote answer not in yet) and
    recording the pin ids it was asked with."""

    def __init__(
        self,
        hit: tuple[int, int, bool] = (0, 0, False),
        pending: bool = False,
        local: int | None = None,
    ) -> None:
        self.hit = hit
        self.pending = pending
        self.local = hit[0] if local is None else local
        """Of the hit, the tokens in the worker's own tiers (all of it unless told)."""
        self.pins: list[int] = []
        self.extras: list[np.ndarray | None] = []

    def __call__(
        self, pin: int, tokens: np.ndarray, extras: np.ndarray | None
    ) -> tuple[int, int, bool, bool, int]:
        self.pins.append(pin)
        self.extras.append(extras)
        return (*self.hit, self.pending, self.local)


@pytest.fixture
def sched() -> KVTierScheduler:
    s = KVTierScheduler(vllm_config(), {"chunk_size": CHUNK})
    s._lookup = Lookups()
    return s


def admit(s: KVTierScheduler, req: Request, ids: list[int], external: int = 0) -> None:
    """A lookup and a successful allocation, as vLLM admits a waiting request."""
    s.get_num_new_matched_tokens(req, 0)
    s.update_state_after_alloc(req, blocks(ids), external)


def test_chunked_prefill_saves_each_chunk_once_and_sends_only_changes(sched) -> None:
    """A 600-token prompt prefilled 300 tokens a step: step 1 saves chunk 0 with the prompt and
    its blocks, step 2 chunk 1 and the tail's 5 whole blocks (up to token 592) with only the
    blocks added since; the last 8 tokens, less than a block, are never saved."""
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
    assert op.tokens is None and op.save_to == 2 * CHUNK + 5 * BLOCK
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
    """The next chunk being stored: None (ask again) until storing_wait_ms has passed."""
    clock = [100.0]
    monkeypatch.setattr(scheduler_module.time, "monotonic", lambda: clock[0])
    sched._lookup = Lookups((CHUNK, CHUNK, True))
    req = request("w", 3 * CHUNK)
    assert sched.get_num_new_matched_tokens(req, 0) == (None, False)
    clock[0] += 2.0 + 0.1  # the default, 2000 ms
    assert sched.get_num_new_matched_tokens(req, 0) == (CHUNK, False)


def test_no_wait_for_a_save_of_tokens_vllm_already_holds(sched) -> None:
    """The chunk being saved ends where vLLM's own prefix cache already reaches: nothing to wait
    for, the lookup answers at once (here: nothing beyond what vLLM holds)."""
    sched._lookup = Lookups((CHUNK, CHUNK, True))
    req = request("w", 3 * CHUNK)
    assert sched.get_num_new_matched_tokens(req, 2 * CHUNK) == (0, False)


def test_storing_wait_ms_zero_never_waits() -> None:
    """storing_wait_ms 0: what is stored loads at once, the rest is computed."""
    s = KVTierScheduler(vllm_config(), {"chunk_size": CHUNK, "storing_wait_ms": 0})
    s._lookup = Lookups((CHUNK, CHUNK, True))
    assert s.get_num_new_matched_tokens(request("w", 3 * CHUNK), 0) == (CHUNK, False)


def test_a_pending_remote_answer_asks_vllm_to_wait_and_unpins(sched) -> None:
    """A remote store's answer not in yet: None (ask again) with the pin given back, counted;
    the next step's lookup, answered, plans the load."""
    sched._lookup = lookups = Lookups((CHUNK, CHUNK, False), pending=True)
    req = request("p", 3 * CHUNK)
    assert sched.get_num_new_matched_tokens(req, 0) == (None, False)
    assert sched.get_num_new_matched_tokens(req, 0) == (None, False)
    assert sched.remote_pending == 2
    assert sched._unpin == lookups.pins, "every pin of a pending lookup is given back"
    lookups.pending = False
    assert sched.get_num_new_matched_tokens(req, 0) == (CHUNK, False)
    assert sched.remote_pending == 2


def test_no_wait_for_a_remote_answer_that_could_add_less_than_a_chunk(sched) -> None:
    """vLLM's own prefix cache holds all but the last 200 tokens: a remote store could add less
    than a chunk, not worth a step; the lookup answers from the local tiers at once."""
    sched._lookup = Lookups((CHUNK, CHUNK, False), pending=True)
    req = request("p", 6 * CHUNK + 200)
    assert sched.get_num_new_matched_tokens(req, 6 * CHUNK) == (0, False)
    assert sched.get_num_new_matched_tokens(request("q", 3 * CHUNK), 0) == (None, False)
    assert sched.remote_pending == 1


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


@pytest.mark.parametrize(("block", "saved", "looked_up"), [(16, 96, True), (48, 0, False)])
def test_a_prompt_shorter_than_a_chunk_is_saved_and_looked_up_in_whole_blocks(
    block: int, saved: int, looked_up: bool
) -> None:
    """Block-granular tails need vLLM's block size to divide the chunk: 100 tokens keep their 6
    whole 16-token blocks; with 48-token blocks (not a divisor of 256) only whole chunks count, so
    such a prompt is neither saved nor looked up."""
    s = KVTierScheduler(vllm_config(block=block), {"chunk_size": CHUNK})
    s._lookup = lookups = Lookups((0, 0, False))
    req = request("short", 100)
    s.get_num_new_matched_tokens(req, 0)
    assert (len(lookups.pins) == 1) is looked_up
    s.update_state_after_alloc(req, blocks([1, 2, 3, 4, 5, 6, 7]), 0)
    meta = s.build_connector_meta(
        output(new=[("short", [1, 2, 3, 4, 5, 6, 7], 0)], scheduled={"short": 100})
    )
    assert [op.save_to for op in meta.ops] == ([saved] if saved else [])


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


# ---- keys: what besides token ids the chunks are keyed by -----------------------------------


def first_op(s: KVTierScheduler, req: Request, computed: int) -> object:
    admit(s, req, [1, 2, 3])
    meta = s.build_connector_meta(
        output(new=[(req.request_id, [1, 2, 3], 0)], scheduled={req.request_id: computed})
    )
    (op,) = meta.ops
    return op


def test_plain_prompts_have_no_extras_and_lora_salt_and_embeds_do(sched) -> None:
    """A plain prompt is keyed by its tokens alone; a LoRA adapter, a cache salt or prompt
    embeddings add key extras that differ between adapters, paths, salts and embeddings, and
    travel to the workers with the tokens and to the lookup."""
    import torch
    from vllm.lora.request import LoRARequest

    plain = first_op(sched, request("plain", 300), 300)
    assert plain.extras is None and sched._lookup.extras[-1] is None
    variants = {
        "lora-a": dict(lora_request=LoRARequest("a", 1, "/adapters/a")),
        "lora-a-moved": dict(lora_request=LoRARequest("a", 1, "/adapters/a2")),
        "lora-b": dict(lora_request=LoRARequest("b", 2, "/adapters/a")),
        "salt-1": dict(cache_salt="tenant-1"),
        "salt-2": dict(cache_salt="tenant-2"),
    }
    seen = set()
    for name, kwargs in variants.items():
        op = first_op(sched, request(name, 300, **kwargs), 300)
        assert op.extras is not None and np.array_equal(op.extras, sched._lookup.extras[-1])
        seen.add(op.extras.tobytes())
    assert len(seen) == len(variants)
    torch.manual_seed(0)
    embeds = Request(
        "e", None, SamplingParams(max_tokens=4), None, prompt_embeds=torch.randn(300, 8)
    )
    op = first_op(sched, embeds, 300)
    assert np.array_equal(op.tokens, np.zeros(300)) and op.extras is not None
    assert op.save_to == CHUNK + 2 * BLOCK and sched.unkeyable == 0


def test_multimodal_items_key_the_chunks_they_overlap() -> None:
    """An image's identifier and its offset inside a chunk key that chunk and every later one;
    the chunks before it keep the plain prompt's keys."""
    from vllm.multimodal.inputs import MultiModalFeatureSpec, PlaceholderRange

    def with_image(identifier: str, offset: int) -> Request:
        feature = MultiModalFeatureSpec(
            data=None,
            modality="image",
            identifier=identifier,
            mm_position=PlaceholderRange(offset=offset, length=20),
        )
        return request(identifier + str(offset), 3 * CHUNK, mm_features=[feature])

    def extras(req: Request) -> np.ndarray:
        s = KVTierScheduler(vllm_config(), {"chunk_size": CHUNK})
        s._lookup = Lookups()
        s.get_num_new_matched_tokens(req, 0)
        return s._lookup.extras[-1]

    a = extras(with_image("img-a", CHUNK + 10))
    b = extras(with_image("img-b", CHUNK + 10))
    moved = extras(with_image("img-a", CHUNK + 11))
    # [root, chunk 0, chunk 1]: trailing zero chunks are dropped, chunk 0 has no image.
    assert len(a) == 6 and not a[:4].any() and a[4:].any()
    assert not np.array_equal(a, b) and not np.array_equal(a, moved)


def test_an_extra_input_kvtier_cannot_key_is_not_cached_counted_and_logged_once(
    sched, monkeypatch, caplog
) -> None:
    """A kind of extra key a later vLLM might add (here: a made-up "watermark") makes the
    request a miss that is never saved, counted, and logged once, without its values."""
    import vllm.v1.core.kv_cache_utils as utils

    real = utils.generate_block_hash_extra_keys
    monkeypatch.setattr(
        utils,
        "generate_block_hash_extra_keys",
        lambda r, s, e, m: ((("watermark", "secret-value"),), real(r, s, e, m)[1]),
    )
    sched._lookup = Lookups((2 * CHUNK, 2 * CHUNK, False))
    for i in range(2):
        req = request(f"u{i}", 2 * CHUNK + 5)
        assert sched.get_num_new_matched_tokens(req, 0) == (0, False)
        sched.update_state_after_alloc(req, blocks([1, 2, 3]), 0)
        meta = sched.build_connector_meta(
            output(new=[(f"u{i}", [1, 2, 3], 0)], scheduled={f"u{i}": 2 * CHUNK + 5})
        )
        assert all(op.save_to == 0 for op in meta.ops)
    assert sched._lookup.pins == [] and sched.unkeyable == 2
    logged = [r.getMessage() for r in caplog.records if "not cached" in r.getMessage()]
    assert len(logged) == 1 and "watermark" in logged[0] and "secret-value" not in logged[0]


def test_reset_cache_starts_a_new_epoch_and_empties_local_tiers_once(sched) -> None:
    """After reset_cache every request is keyed under a new root (so nothing stored before can
    be served), including one looked up before the reset; the next metadata, and only it, tells
    the workers to empty their local tiers."""
    before = first_op(sched, request("old", 300), 300)
    assert before.extras is None
    waiting = request("w", 300)
    sched.get_num_new_matched_tokens(waiting, 0)
    assert sched.reset_cache() is True
    first = sched.build_connector_meta(output())
    assert first.clear_local and not sched.build_connector_meta(output()).clear_local
    after = first_op(sched, request("new", 300), 300)
    assert after.extras is not None and len(after.extras) == 2  # the root only
    sched.get_num_new_matched_tokens(waiting, 0)
    assert np.array_equal(sched._lookup.extras[-1], after.extras)
    assert sched.reset_cache() is True
    again = first_op(sched, request("newer", 300), 300)
    assert not np.array_equal(again.extras, after.extras), "each reset picks its own epoch"


def decode(s: KVTierScheduler, req: Request, generated: list[int], computed_to: int):
    """One decode step of ``req`` after ``generated`` tokens were sampled."""
    req.append_output_token_ids(generated)
    return s.build_connector_meta(
        output(
            cached=[(req.request_id, [4], computed_to - 1, False)], scheduled={req.request_id: 1}
        )
    )


def test_decode_chunks_are_saved_with_their_tokens() -> None:
    """save_decode_cache (the default): once generated tokens fill a chunk whose KV is computed,
    it is saved, and the workers get the longer token list; partial chunks of generated tokens
    are not (the prompt's last whole blocks are)."""
    s = KVTierScheduler(vllm_config(), {"chunk_size": CHUNK})
    s._lookup = Lookups()
    req = request("chat", 300)
    assert first_op(s, req, 300).save_to == CHUNK + 2 * BLOCK
    meta = decode(s, req, list(range(1000, 1000 + 200)), 500)
    assert meta.ops == [], "500 tokens computed: still one full chunk"
    meta = decode(s, req, list(range(2000, 2013)), 513)
    (op,) = meta.ops
    assert op.save_to == 2 * CHUNK and len(op.tokens) == 2 * CHUNK
    assert np.array_equal(op.tokens[300:500], np.arange(1000, 1200))


def test_decode_chunks_are_not_saved_when_switched_off() -> None:
    s = KVTierScheduler(vllm_config(), {"chunk_size": CHUNK, "save_decode_cache": False})
    s._lookup = Lookups()
    req = request("chat", 300)
    assert first_op(s, req, 300).save_to == CHUNK + 2 * BLOCK
    assert decode(s, req, list(range(1000, 1300)), 600).ops == []


def ended(req_id: str, **ranks: int) -> SimpleNamespace:
    """A step's worker output reporting ``req_id``'s saves ended, as ``rank<n>=seq``."""
    saves = {req_id: {int(r.removeprefix("rank")): seq for r, seq in ranks.items()}}
    return SimpleNamespace(
        finished_recving=None,
        finished_sending=None,
        kv_connector_worker_meta=KVTierWorkerMetadata(saves),
    )


def test_saves_reported_ended_by_every_rank_free_the_blocks_at_the_finish() -> None:
    """Two ranks: request_finished holds the blocks (True) until both ranks reported the last
    save sent as ended; a report of an earlier save, of one rank only, or of a new save's
    predecessor changes nothing."""
    s = KVTierScheduler(vllm_config(ranks=2), {"chunk_size": CHUNK})
    s._lookup = Lookups()
    req = request("r", 600)
    admit(s, req, [7, 3, 9])
    (op1,) = s.build_connector_meta(output(new=[("r", [7, 3, 9], 0)], scheduled={"r": 300})).ops
    (op2,) = s.build_connector_meta(
        output(cached=[("r", [4, 5], 300, False)], scheduled={"r": 300})
    ).ops
    assert 0 < op1.save_seq < op2.save_seq
    s.update_connector_output(ended("r", rank0=op2.save_seq, rank1=op1.save_seq))
    assert s.state_of("r") is State.SAVING
    s.update_connector_output(ended("r", rank1=op2.save_seq))
    assert s.state_of("r") is State.RUNNING
    assert s.request_finished(req) is False
    assert s.build_connector_meta(output()).finished == {"r": False}


def test_a_report_of_an_earlier_request_with_the_same_id_frees_nothing(sched) -> None:
    """Save numbers grow over all requests: a late report for a finished request does not count
    for a new request that reuses its id."""
    first = request("r", 600)
    admit(sched, first, [1, 2, 3])
    (old,) = sched.build_connector_meta(output(new=[("r", [1, 2, 3], 0)], scheduled={"r": 600})).ops
    assert sched.request_finished(first) is True
    sched.update_connector_output(ended("r", rank0=old.save_seq))  # dropped: r is finishing
    again = request("r", 600)
    admit(sched, again, [4, 5, 6])
    sched.build_connector_meta(output(new=[("r", [4, 5, 6], 0)], scheduled={"r": 600}))
    sched.update_connector_output(ended("r", rank0=old.save_seq))
    assert sched.state_of("r") is State.SAVING
    assert sched.request_finished(again) is True


def test_worker_metadata_aggregates_ranks_and_keeps_the_highest_number() -> None:
    a = KVTierWorkerMetadata({"x": {0: 3}, "y": {0: 5}})
    b = KVTierWorkerMetadata({"x": {1: 4}, "y": {0: 2}})
    assert a.aggregate(b).saves_ended == {"x": {0: 3, 1: 4}, "y": {0: 5}}
    assert a.saves_ended == {"x": {0: 3}, "y": {0: 5}}, "aggregate leaves its inputs alone"
