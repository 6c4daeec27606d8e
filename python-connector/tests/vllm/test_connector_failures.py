"""Failures injected into each connector method, with vLLM 0.32's real ``Scheduler`` driving it.

Whatever throws inside kvtier — the Java engine or worker behind a call, or kvtier's own Python —
the connector method returns normally and the request ends with the right KV and output: a lookup
that fails is a miss, a load that fails has its blocks reported in
``get_block_ids_with_load_errors`` (vLLM recomputes them), a save that fails is dropped, and
nothing is reported that vLLM does not expect (``engine_loop.Loop.assert_idle`` checks that the
scheduler side dropped no worker report, so the worker side itself reported only what vLLM
expects). See ``engine_loop.py`` for the harness.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (scripts/lib/vllm-env.sh installs it)")

from engine_loop import (
    CHUNK,
    HeldCompletions,
    Loop,
    prompt,
    store,
)

from kvtier.errors import JavaStateError


def broken(where: str, times: int | None = None, real=None):
    """A replacement that raises ``times`` times (always when None), then calls ``real``."""
    calls = [0]

    def call(*args, **kwargs):
        calls[0] += 1
        if times is None or calls[0] <= times:
            raise JavaStateError("java.lang.IllegalStateException", f"injected: {where}")
        return real(*args, **kwargs)

    call.calls = calls  # type: ignore[attr-defined]
    return call


def warm(make_loop, blocks: int = 40, background: bool = False) -> tuple[Loop, list[int]]:
    """A loop with a stored 4-chunk prompt."""
    loop = make_loop(blocks)
    shared = prompt(4 * CHUNK, seed=21)
    store(loop, "warm", shared)
    loop.force_background(background)
    return loop, shared


def loaded(loop: Loop) -> int:
    return loop.worker_side.stats()["loaded_tokens"]


@pytest.mark.parametrize("error", [JavaStateError, RuntimeError])
def test_lookup_that_throws_is_a_miss(make_loop, monkeypatch, error) -> None:
    """The lookup throws (the engine's, or anything in kvtier's lookup path): the request is a
    miss, computed in full; no pin is left."""
    loop, shared = warm(make_loop)

    def fails(pin, tokens, extras):
        raise error("java.lang.IllegalStateException", "injected: lookup")

    monkeypatch.setattr(loop.side, "_lookup", fails)
    before = loaded(loop)
    loop.add("hit", [*shared, 1])
    loop.run()
    assert loaded(loop) == before and not loop.reports.load_errors
    assert loop.side.failures > 0
    loop.assert_outputs("hit")
    loop.assert_idle()


@pytest.mark.parametrize("background", [False, True], ids=["from-memory", "background"])
def test_alloc_that_throws_reports_the_counted_tokens_as_load_errors(
    make_loop, monkeypatch, background
) -> None:
    """update_state_after_alloc throws after vLLM counted the hit: the load goes out as a failed
    one, its blocks come back as load errors and vLLM recomputes them."""
    loop, shared = warm(make_loop, background=background)
    monkeypatch.setattr(loop.side, "_confirm", broken("update_state_after_alloc", times=1))
    before = loaded(loop)
    loop.add("hit", [*shared, 1])
    loop.run()
    assert loaded(loop) == before
    assert loop.reports.load_errors or loop.reports.failed_recving
    assert ("hit" in loop.reports.recving) == background
    loop.assert_outputs("hit")
    loop.assert_idle()


@pytest.mark.parametrize("background", [False, True], ids=["from-memory", "background"])
def test_load_that_throws_reports_its_blocks_as_load_errors(
    make_loop, monkeypatch, background
) -> None:
    """The Java load throws: its blocks are load errors (with finished_recving for a background
    load) and vLLM recomputes them; the next request with the prompt loads it."""
    loop, shared = warm(make_loop, background=background)
    java = loop.worker_side._worker
    method = "submitLoad" if background else "load"
    monkeypatch.setattr(java, method, broken(method, times=1, real=getattr(java, method)))
    loop.add("hit", [*shared, 1])
    loop.run()
    assert len(loop.reports.load_errors) >= 4 * CHUNK // 16
    loop.assert_outputs("hit")
    before = loaded(loop)
    loop.add("again", [*shared, 2])
    loop.run()
    assert loaded(loop) - before == 4 * CHUNK
    loop.assert_idle()


def test_layerwise_load_that_throws_reports_its_blocks_as_load_errors(
    make_loop, monkeypatch
) -> None:
    """Layerwise mode: a layer's copy throws; the load ends as failed and its blocks recompute."""
    loop = make_loop(40, settings={"use_layerwise": True})
    shared = prompt(4 * CHUNK, seed=22)
    store(loop, "warm", shared)
    java = loop.worker_side._worker
    monkeypatch.setattr(java, "loadLayer", broken("loadLayer"))
    loop.add("hit", [*shared, 1])
    loop.run()
    assert loop.reports.load_errors
    loop.assert_outputs("hit")
    loop.assert_idle()


def test_save_that_throws_is_dropped(make_loop, monkeypatch) -> None:
    """The Java save throws: the save is dropped, which ends it, so the worker reports it ended and
    the request's blocks are freed at its finish (no finished_sending); a later request with the
    prompt misses."""
    loop = make_loop(40)
    java = loop.worker_side._worker
    monkeypatch.setattr(java, "submitSave", broken("submitSave"))
    p = prompt(4 * CHUNK, seed=23)
    loop.add("r", p)
    loop.run()
    assert loop.reports.sending == []
    assert loop.worker_side.failures > 0
    loop.add("again", [*p, 1])
    loop.run()
    assert loaded(loop) == 0
    loop.assert_outputs("r", "again")
    loop.assert_idle()


def test_get_finished_that_throws_reports_later(make_loop, monkeypatch) -> None:
    """Collecting finished transfers throws in some steps: get_finished returns normally and the
    transfers are reported in a later step."""
    loop, shared = warm(make_loop, background=True)
    java = loop.worker_side._worker
    monkeypatch.setattr(
        java, "drainCompleted", broken("drainCompleted", times=5, real=java.drainCompleted)
    )
    loop.add("hit", [*shared, 1])
    loop.run()
    assert loop.reports.recving == ["hit"] and not loop.reports.load_errors
    loop.assert_outputs("hit")
    loop.assert_idle()


def test_waiting_for_a_preempted_requests_saves_that_throws_goes_on(make_loop, monkeypatch) -> None:
    """Waiting for a preempted request's saves throws: handle_preemptions returns normally."""
    loop = make_loop(12)
    java = loop.worker_side._worker
    monkeypatch.setattr(java, "awaitTickets", broken("awaitTickets"))
    held = HeldCompletions(loop)  # b's saves are still in flight when it is preempted
    loop.add("a", prompt(48, seed=24), max_tokens=40)
    loop.add("b", prompt(3 * CHUNK, seed=25), max_tokens=20)
    loop.run(lambda: loop.status("b").name == "PREEMPTED")
    assert loop.worker_side.failures > 0
    held.release()
    loop.run()
    assert loop.reports.outputs["b"] == [7] * 20
    loop.assert_idle()


@pytest.mark.parametrize("part", ["_scheduled", "_save_to", "_build"])
def test_build_connector_meta_that_throws_still_sends_every_confirmed_load(
    make_loop, monkeypatch, part
) -> None:
    """Planning a step throws (for one request, or for the whole step): build_connector_meta
    returns metadata, every load vLLM counts on goes out (as a failed one if its plan is lost,
    so its blocks recompute), and the requests end."""
    loop, shared = warm(make_loop)
    monkeypatch.setattr(loop.side, part, broken(part))
    loop.add("hit", [*shared, 1])
    loop.add("other", prompt(2 * CHUNK + 3, seed=26))
    loop.run()
    loop.assert_outputs("hit", "other")
    assert loop.side.failures > 0
    loop.assert_idle()


def test_bind_that_throws_reports_the_load_as_failed(make_loop, monkeypatch) -> None:
    """Applying a step's op throws on the worker: its load is reported as failed."""
    loop, shared = warm(make_loop)
    monkeypatch.setattr(loop.worker_side, "_apply", broken("bind"))
    loop.add("hit", [*shared, 1])
    loop.run()
    assert loop.reports.load_errors
    loop.assert_outputs("hit")
    monkeypatch.undo()
    loop.assert_idle()


def test_reports_that_would_fail_vllm_are_dropped_before_vllm_sees_them(
    make_loop, monkeypatch
) -> None:
    """A running request reported in finished_recving (vLLM asserts it waits for remote KV) or in
    finished_sending (vLLM would free blocks it computes in) is dropped by the scheduler side
    before vLLM acts on it; the request runs on and ends right."""
    loop = make_loop(40)
    loop.add("r", prompt(3 * CHUNK, seed=27), max_tokens=4)
    loop.step()
    real = loop.worker_side.get_transfer_results
    injected = iter([True])

    def with_bogus_reports(finished_req_ids):
        sending, recving, failed = real(finished_req_ids)
        if next(injected, False):
            sending, recving = sending | {"r"}, recving | {"r"}
        return sending, recving, failed

    monkeypatch.setattr(loop.worker_side, "get_transfer_results", with_bogus_reports)
    loop.step()
    assert loop.reports.recving == ["r"] and loop.reports.sending == ["r"]
    assert loop.side.dropped_reports == 2
    assert loop.status("r").name == "RUNNING"
    loop.side.dropped_reports = 0
    loop.run()
    loop.assert_outputs("r", tokens=4)
    loop.assert_idle()
