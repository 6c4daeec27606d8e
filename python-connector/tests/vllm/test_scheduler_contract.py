"""kvtier's connector against vLLM 0.32's real ``Scheduler``, in every order vLLM can drive it.

Each test runs the real scheduler over a KV cache of a few blocks, with kvtier's scheduler side
(created by the scheduler) and worker side (over CPU tensors, in process) — see
``engine_loop.py``. The simulated forward checks every computed token's KV, so a load into the
wrong blocks or tokens counted as loaded that nobody wrote fail the test; vLLM's own assertions
fail it when kvtier reports a request vLLM does not expect. Each test ends with vLLM holding no
request and no block, and kvtier holding no pin and no request state.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (scripts/lib/vllm-env.sh installs it)")

from engine_loop import (
    BLOCK,
    CHUNK,
    AwaitedTickets,
    HeldCompletions,
    busy,
    prompt,
    store,
)

from kvtier import _jvm
from kvtier.vllm.scheduler import State


def test_a_stored_prompt_loads_and_generates(make_loop) -> None:
    """The harness itself: a prompt run twice loads its stored chunks the second time."""
    loop = make_loop(40)
    p = prompt(4 * CHUNK + 5, seed=1)
    store(loop, "first", p)
    loop.add("second", p)
    loop.run()
    assert loop.reports.outputs["second"] == [7, 7]
    assert loop.worker_side.stats()["loaded_tokens"] == 4 * CHUNK
    loop.assert_idle()


@pytest.mark.parametrize("background", [True, False], ids=["background", "from-memory"])
def test_allocation_failure_after_a_hit_sends_no_load(make_loop, background) -> None:
    """With the cache full, a looked-up hit's allocation fails (vLLM skips the request without
    update_state_after_alloc): nothing is loaded into an empty block table and nothing is
    reported; once blocks free up the request is looked up again, loads and generates."""
    loop = make_loop(16)
    shared = prompt(6 * CHUNK, seed=2)
    store(loop, "warm", shared)
    loop.force_background(background)
    loop.add("big", prompt(12 * BLOCK, seed=3), max_tokens=3)
    loop.step()
    assert loop.status("big").name == "RUNNING"
    loop.add("hit", [*shared, 5, 6, 7])
    out = loop.step()
    assert "hit" not in out.num_scheduled_tokens and loop.status("hit").name == "WAITING"
    assert loop.side.state_of("hit") is State.LOOKED_UP
    assert not [op for op in out.kv_connector_metadata.ops if op.req_id == "hit"]
    loop.run()
    assert loop.reports.outputs["hit"] == [7, 7]
    assert loop.reports.outputs["big"] == [7, 7, 7]
    assert loop.worker_side.stats()["loaded_tokens"] == len(shared)
    assert loop.reports.recving == (["hit"] if background else [])
    loop.assert_idle()


def test_lookup_alone_commits_nothing_and_its_pins_go(make_loop) -> None:
    """A waiting request looked up step after step (its allocation keeps failing) holds the pins
    of its last lookup only; aborted while waiting, it holds none and nothing was ever sent."""
    loop = make_loop(16)
    shared = prompt(6 * CHUNK, seed=4)
    store(loop, "warm", shared)
    loop.add("big", prompt(12 * BLOCK, seed=5), max_tokens=6)
    loop.step()
    loop.add("hit", [*shared, 9])
    seen: set[int] = set()
    for _ in range(3):
        out = loop.step()
        assert loop.status("hit").name == "WAITING"
        assert not [op for op in out.kv_connector_metadata.ops if op.req_id == "hit"]
        assert len(loop.pins.held) == 1, "the pins of the earlier lookups were released"
        seen |= loop.pins.held
    assert len(seen) == 3, "each lookup pins afresh"
    loop.abort("hit")
    loop.run()
    assert loop.reports.outputs["hit"] == []
    assert "hit" not in loop.reports.recving + loop.reports.sending
    loop.assert_idle()


@pytest.mark.parametrize("when", ["loading", "loaded"])
def test_abort_during_a_background_load_keeps_blocks_until_it_is_received(make_loop, when) -> None:
    """Aborted (client disconnect) while its background load runs, or after the load was
    reported but before vLLM scheduled it: request_finished answers False, vLLM frees the blocks
    when the load is reported, and the request is never reported in finished_sending."""
    loop = make_loop(40)
    shared = prompt(5 * CHUNK, seed=6)
    store(loop, "warm", shared)
    loop.force_background()
    held = HeldCompletions(loop)
    loop.add("hit", [*shared, 3])
    out = loop.step()
    (op,) = [op for op in out.kv_connector_metadata.ops if op.req_id == "hit"]
    assert op.load.background and len(op.new_blocks) == len(shared) // BLOCK
    assert loop.status("hit").name == "WAITING_FOR_REMOTE_KVS"
    assert loop.side.state_of("hit") is State.LOADING
    if when == "loaded":
        held.release()
        loop.run(lambda: "hit" in loop.reports.recving)
        assert loop.side.state_of("hit") is State.LOADED
    loop.abort("hit")
    out = loop.step()
    assert out.kv_connector_metadata.finished == {"hit": False}
    if when == "loading":
        assert "hit" in loop.scheduler.requests, "vLLM holds the blocks the load writes into"
        held.release()
    loop.run()
    assert loop.reports.recving == ["hit"] and loop.reports.sending == ["warm"]
    loop.assert_idle()


@pytest.mark.parametrize("how", ["length", "abort"])
def test_finished_while_saving_holds_blocks_until_the_saves_end(make_loop, how) -> None:
    """A request that finishes (its last token, or an abort) while saves out of its blocks are in
    flight: request_finished answers True and vLLM frees the blocks only once the worker reports
    it in finished_sending."""
    loop = make_loop(40)
    held = HeldCompletions(loop)
    loop.add("r", prompt(4 * CHUNK + 3, seed=7), max_tokens=2)
    loop.step()
    assert loop.side.state_of("r") is State.SAVING
    if how == "abort":
        loop.abort("r")
    else:
        loop.run(lambda: loop.status("r").name == "FINISHED_LENGTH_CAPPED", pause_s=0)
    out = loop.step()
    assert out.kv_connector_metadata.finished == {"r": True}
    assert loop.side.state_of("r") is State.FINISHED_SAVING
    for _ in range(3):
        loop.step()
    assert "r" in loop.scheduler.requests and loop.reports.sending == []
    assert loop.scheduler.kv_cache_manager.get_block_ids("r")[0], "blocks still held"
    held.release()
    loop.run()
    assert loop.reports.sending == ["r"]
    loop.assert_idle()


def test_saves_that_ended_during_decode_free_the_blocks_at_the_finish(make_loop) -> None:
    """A request whose saves the worker reported ended while it decoded (vLLM's worker-to-
    scheduler metadata) finishes with request_finished answering False: vLLM frees its blocks in
    the step it finishes, no finished_sending follows, and what was saved loads byte for byte."""
    loop = make_loop(40)
    tokens = prompt(4 * CHUNK + 3, seed=11)
    loop.add("r", tokens, max_tokens=12)
    loop.step()
    assert loop.side.state_of("r") is State.SAVING
    tickets = np.array(sorted(loop.worker_side._requests["r"].tickets))
    assert len(tickets) and loop.worker_side._worker.awaitTickets(_jvm.long_array(tickets), 60_000)
    loop.step()  # the worker collects the ended saves and reports them with this step's output
    assert loop.side.state_of("r") is State.RUNNING
    loop.run(lambda: "r" not in loop.scheduler.requests)
    assert loop.reports.sending == []
    assert loop.reports.outputs["r"] == [7] * 12
    loaded_before = loop.worker_side.stats()["loaded_tokens"]
    loop.add("again", tokens, max_tokens=2)
    loop.run()
    assert loop.worker_side.stats()["loaded_tokens"] - loaded_before == 4 * CHUNK
    loop.assert_idle()


def test_preempted_while_saving_waits_for_its_saves_and_resumes_with_a_new_lookup(
    make_loop,
) -> None:
    """Two requests outgrow the cache: vLLM preempts the one whose saves are in flight. The worker
    waits for those saves before the step that reuses the blocks, forgets its block table and
    reports nothing for it; resumed, the request is looked up again and loads its own chunks into
    its new blocks."""
    loop = make_loop(12)
    awaited = AwaitedTickets(loop)
    held = HeldCompletions(loop)
    loop.add("a", prompt(3 * BLOCK, seed=8), max_tokens=40)
    loop.add("b", prompt(3 * CHUNK, seed=9), max_tokens=20)
    loop.step()
    assert loop.side.state_of("b") is State.SAVING
    save_tickets = set(loop.worker_side._requests["b"].tickets)
    assert save_tickets
    preempted_in = None
    for _ in range(40):
        out = loop.step()
        if "b" in (out.preempted_req_ids or ()):
            preempted_in = out
            break
    assert preempted_in is not None, "b was never preempted"
    assert preempted_in.kv_connector_metadata.preempted == ["b"]
    assert save_tickets <= set(awaited.tickets), "the worker waited for b's saves"
    assert loop.worker_side._requests["b"].blocks == []
    held.release()
    loaded_before = loop.worker_side.stats()["loaded_tokens"]
    loop.run()
    assert loop.worker_side.stats()["loaded_tokens"] - loaded_before == 3 * CHUNK
    assert "b" not in loop.reports.recving
    assert loop.reports.outputs["b"] == [7] * 20
    assert loop.reports.outputs["a"] == [7] * 40
    loop.assert_idle()


def test_preempted_and_resumed_in_one_schedule_after_reset_prefix_cache(make_loop) -> None:
    """reset_prefix_cache preempts a running request and the next schedule() looks it up and
    resumes it before build_connector_meta: the workers learn of the preemption once, ahead of
    the new block table, and the request loads its own chunks back."""
    loop = make_loop(40)
    loop.add("r", prompt(3 * CHUNK + 5, seed=10), max_tokens=4)
    loop.step()
    # Its saves end before any further step (waiting on those still running, not stepping while
    # they run: a step too many would finish the request). A save may already have ended within
    # the step; the three chunks are saved either way.
    saves = np.array(sorted(loop.worker_side._requests["r"].tickets), dtype=np.int64)
    assert loop.worker_side._worker.awaitTickets(_jvm.long_array(saves), 60_000)
    assert loop.worker_side.stats()["saved_chunks"] == 3
    assert loop.side.state_of("r") is State.SAVING
    assert loop.scheduler.reset_prefix_cache(reset_running_requests=True)
    out = loop.step()
    meta = out.kv_connector_metadata
    assert out.preempted_req_ids == {"r"} and "r" in out.scheduled_cached_reqs.resumed_req_ids
    assert meta.preempted == ["r"]
    (op,) = meta.ops
    assert op.blocks_at == 0 and op.load is not None and op.load.end == 3 * CHUNK
    loop.run()
    assert loop.reports.outputs["r"] == [7] * 4
    loop.assert_idle()


def test_preempted_after_its_load_was_confirmed_but_before_the_worker_ran_it(make_loop) -> None:
    """Async scheduling: a request admitted with a load from memory in step N is preempted by the
    schedule of step N+1, before the worker has run step N. The worker loads in step N, then
    forgets the request's blocks before step N+1; the request is looked up again later, loads and
    generates; no other request's KV is touched."""
    loop = make_loop(12, async_scheduling=True)
    shared = prompt(3 * CHUNK, seed=11)
    store(loop, "warm", shared)
    loop.add("a", prompt(3 * BLOCK, seed=12), max_tokens=40)
    loop.run(lambda: loop.scheduler.requests["a"].num_computed_tokens >= 4 * BLOCK - 1, pause_s=0)
    assert loop.scheduler.requests["a"].num_computed_tokens == 4 * BLOCK - 1
    loop.add("b", [*shared, 4])
    admitted = loop.step()
    (op,) = [op for op in admitted.kv_connector_metadata.ops if op.req_id == "b"]
    assert op.load is not None and not op.load.background
    preempting = loop.step()  # schedules N+1 before N has run, then runs N
    assert preempting.preempted_req_ids == {"b"}
    assert preempting.kv_connector_metadata.preempted == ["b"]
    loop.run()
    loop.assert_outputs("b")
    assert loop.reports.outputs["a"] == [7] * 40
    loop.assert_idle()


def test_background_load_that_fails_whole_is_recomputed_after_a_new_lookup(
    make_loop, monkeypatch
) -> None:
    """A background load that cannot start reports its blocks as load errors together with
    finished_recving; vLLM frees the blocks and looks the request up again, which answers a miss
    (a load that keeps failing must not hold the request), and the request is computed."""
    loop = make_loop(40)
    shared = prompt(4 * CHUNK, seed=13)
    store(loop, "warm", shared)
    loop.force_background()
    java = loop.worker_side._worker

    def fails(*args):
        raise RuntimeError("injected: submitLoad")

    monkeypatch.setattr(java, "submitLoad", fails)
    lookups = []
    real = loop.side._look_up
    monkeypatch.setattr(loop.side, "_look_up", lambda *a: lookups.append(real(*a)) or lookups[-1])
    loop.add("hit", [*shared, 1, 2])
    loop.run()
    assert lookups == [(4 * CHUNK, True), (0, False)]
    assert len(loop.reports.load_errors) == 4 * CHUNK // BLOCK
    assert loop.reports.recving == ["hit"]
    loop.assert_outputs("hit")
    loop.assert_idle()


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["sync", "async"])
def test_many_requests_sharing_prefixes_in_a_cache_smaller_than_the_working_set(
    make_loop, async_scheduling
) -> None:
    """The load the defect showed under: requests sharing a few prefixes arrive faster than a
    20-block cache holds them, hits alternate between memory and background loads, and some are
    aborted at random points. vLLM never fails, every request that is not aborted generates
    with the right KV, and everything is released at the end."""
    loop = make_loop(20, async_scheduling=async_scheduling, max_batched_tokens=128)
    flip = [False]
    real = loop.worker_side.lookup

    def alternating(pin, tokens, extras):
        hit, in_memory, storing, pending, local = real(pin, tokens, extras)
        flip[0] = not flip[0]
        return hit, (0 if flip[0] else in_memory), storing, pending, local

    loop.side._lookup = alternating
    busy(loop, requests=40, seed=5)
