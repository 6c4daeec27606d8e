"""Models with sliding-window layers, end to end with real vLLM on CPU: every layer sliding, and
sliding and full layers mixed (vLLM's hybrid KV cache manager on: a group of each).

vLLM frees a request's blocks once they slide out of the window, while the request runs, and
hands them to other requests. One vLLM without kvtier and one with kvtier's defaults run the same
steps under the same threading and float32 (vLLM's prefix cache off in both, so every hit is
kvtier's; a third run has it on, as users run), in a KV cache too small for the batched prompts at
once: every output with kvtier equals the run without it, and hits are whole chunks
(``kvtier.vllm.groups``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "vllm", reason="vLLM (CPU) is not installed; scripts/lib/vllm-env.sh installs it"
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
sys.path.insert(0, str(Path(__file__).parents[3] / "examples"))

import tiny_model  # noqa: E402
from vllm_runs import CHUNK, CONNECTOR, Run, Step, same_runtime, start  # noqa: E402

WINDOW = tiny_model.SLIDING.sliding_window
TWICE = tiny_model.prompt(4 * CHUNK + 137, seed=61)
STORED = tiny_model.prompt(4 * CHUNK + 44, seed=62)
PREFIXED = [STORED, STORED[: 3 * CHUNK + 150] + tiny_model.prompt(200, seed=63)]
"""The second shares 3 chunks and 150 tokens of the first's fourth: a full-attention model would
also hit the fourth chunk's first block (128 tokens); a sliding one stops at the chunk."""
BATCH = [tiny_model.prompt(4 * CHUNK + 60, seed=70 + i) for i in range(4)]
BATCH_TOKENS = 24
STEPS = [
    Step([TWICE]),
    Step([TWICE]),
    Step(PREFIXED),
    Step(BATCH, batch=True, max_tokens=BATCH_TOKENS),
    Step(BATCH, batch=True, max_tokens=BATCH_TOKENS),
]


@pytest.fixture(scope="module")
def model() -> str:
    return str(tiny_model.build(spec=tiny_model.SLIDING))


@pytest.fixture(scope="module")
def all_runs(model: str) -> tuple[Run, Run, Run]:
    """Without kvtier, with kvtier, and with kvtier and vLLM's prefix cache on, over every step
    (started together)."""
    started = [
        start(model, STEPS, None),
        start(model, STEPS, CONNECTOR),
        start(model, STEPS, CONNECTOR, llm={"enable_prefix_caching": True}),
    ]
    without, with_kvtier, with_prefix_cache = (s.result() for s in started)
    same_runtime(without_kvtier=without, with_kvtier=with_kvtier, prefix_cache=with_prefix_cache)
    return without, with_kvtier, with_prefix_cache


@pytest.fixture(scope="module")
def runs(all_runs: tuple[Run, Run, Run]) -> tuple[Run, Run]:
    """(without kvtier, with kvtier) over every step."""
    return all_runs[0], all_runs[1]


def test_the_model_slides_and_its_outputs_show_a_wrong_window(runs: tuple[Run, Run]) -> None:
    """The prompts are longer than the window, and different prompts give different outputs,
    so a wrong window loaded would show."""
    without, _ = runs
    assert len(TWICE) > 2 * WINDOW
    outputs = [tuple(t) for step in range(len(STEPS)) for t in without.tokens(step)]
    assert len(set(outputs)) == len({tuple(t) for t in (TWICE, *PREFIXED, *BATCH)})


def test_every_output_equals_vllm_without_kvtier(runs: tuple[Run, Run]) -> None:
    without, with_kvtier = runs
    for step in range(len(STEPS)):
        assert with_kvtier.tokens(step) == without.tokens(step), f"step {step}"


def test_hits_are_whole_chunks(runs: tuple[Run, Run]) -> None:
    """The same prompt again hits its 4 whole chunks (not the fifth chunk's whole block); a
    prompt sharing 150 tokens of a stored chunk hits only the chunks before it."""
    _, got = runs
    assert got.cached(1) == [4 * CHUNK]
    assert got.cached(2) == [0, 3 * CHUNK]


def test_batched_prompts_that_preempt_each_other_hit_their_saved_chunks(
    runs: tuple[Run, Run],
) -> None:
    """Four prompts at once in a KV cache too small for them (vLLM preempts, and hands blocks
    that slid out of one request's window to another): the second round hits every saved chunk,
    and its outputs equal vLLM's without kvtier."""
    without, got = runs
    assert got.cached(4) == [4 * CHUNK] * len(BATCH)
    assert got.tokens(4) == got.tokens(3) == without.tokens(3)


def test_with_vllms_own_prefix_cache_on_as_users_run(all_runs: tuple[Run, Run, Run]) -> None:
    """vLLM's default: its own prefix cache serves what it still holds (whole blocks, and for a
    sliding window only the window's), kvtier what lies beyond; every output equals vLLM's
    without kvtier, and the same prompt asked again is cached up to its last whole chunk at
    least."""
    without, _, got = all_runs
    for step in range(len(STEPS)):
        assert got.tokens(step) == without.tokens(step), f"step {step}"
    assert got.cached(1)[0] >= 4 * CHUNK


@pytest.fixture(scope="module")
def mixed_runs() -> tuple[Run, Run, Run, Run]:
    """SMALL (the same weights, every layer full) without kvtier, then MIXED (every other layer
    slides) without kvtier, with kvtier, and with kvtier and vLLM's prefix cache on, over every
    step (started together)."""
    full = str(tiny_model.build(spec=tiny_model.SMALL))
    mixed = str(tiny_model.build(spec=tiny_model.MIXED))
    started = [
        start(full, STEPS, None),
        start(mixed, STEPS, None),
        start(mixed, STEPS, CONNECTOR),
        start(mixed, STEPS, CONNECTOR, llm={"enable_prefix_caching": True}),
    ]
    runs = tuple(s.result() for s in started)
    same_runtime(full=runs[0], without_kvtier=runs[1], with_kvtier=runs[2], prefix_cache=runs[3])
    return runs


def test_mixed_sliding_and_full_layers_keep_their_groups_and_every_output(
    mixed_runs: tuple[Run, Run, Run, Run],
) -> None:
    """kvtier is a SupportsHMA connector: vLLM keeps its hybrid KV cache manager on, with one
    group of sliding layers and one of full layers over the same memory. Every output equals
    vLLM's without kvtier (whose manager is on too), hits are whole chunks (the sliding group's
    window is what the chunk kept), and batched prompts that preempt each other hit every saved
    chunk. The sliding layers are in effect: the same weights with every layer full answer the
    long prompt otherwise."""
    full, without, got, _ = mixed_runs
    assert got.stats["kv_cache_groups"] == 2 and got.stats["sliding_groups"] == 1
    assert len(TWICE) > 2 * WINDOW
    assert without.tokens(0) != full.tokens(0), "the sliding window changes nothing"
    for step in range(len(STEPS)):
        assert got.tokens(step) == without.tokens(step), f"step {step}"
    assert got.cached(1) == [4 * CHUNK]
    assert got.cached(2) == [0, 3 * CHUNK]
    assert got.cached(4) == [4 * CHUNK] * len(BATCH)


def test_mixed_layers_with_vllms_own_prefix_cache_on_as_users_run(
    mixed_runs: tuple[Run, Run, Run, Run],
) -> None:
    """vLLM's default: its own prefix cache serves what its two groups still hold, kvtier what
    lies beyond; every output equals vLLM's without kvtier."""
    _, without, _, got = mixed_runs
    assert got.stats["kv_cache_groups"] == 2
    for step in range(len(STEPS)):
        assert got.tokens(step) == without.tokens(step), f"step {step}"
    assert got.cached(1)[0] >= 4 * CHUNK
