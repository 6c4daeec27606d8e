"""Correct KV for every kind of request vLLM serves, end to end with real vLLM on CPU.

One vLLM without kvtier and one with kvtier's defaults run the same steps (LoRA adapters, cache
salts, prompt embeddings, a cache reset, a two-turn conversation) under the same threading and
float32. Every output with kvtier equals the run without it, and the hit counts show kvtier
serving KV exactly where vLLM's own prefix cache would: never across adapters, adapter paths,
salts or embeddings, never after a reset, and beyond the first turn's prompt in the second turn.
vLLM's prefix cache is off in both runs, so every hit counted is kvtier's.
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

import lora_adapter  # noqa: E402
import tiny_model  # noqa: E402
from vllm_runs import CHUNK, CONNECTOR, Run, Step, same_runtime, start  # noqa: E402

LORA_PROMPT = tiny_model.prompt(2 * CHUNK + 40, seed=40)
SALT_PROMPT = tiny_model.prompt(2 * CHUNK + 41, seed=41)
EMBEDS_PROMPT = [0] * (2 * CHUNK + 42)
RESET_PROMPT = tiny_model.prompt(2 * CHUNK + 43, seed=43)
TURN_1 = tiny_model.prompt(CHUNK + 44, seed=44)
TURN_1_TOKENS = CHUNK
"""Generated in turn 1: prompt and answer together fill two chunks and end in a third."""
TURN_2_MESSAGE = tiny_model.prompt(45, seed=45)

STEPS = {
    "lora": Step(
        [
            LORA_PROMPT,
            {"tokens": LORA_PROMPT, "lora": "a"},
            {"tokens": LORA_PROMPT, "lora": "b"},
            {"tokens": LORA_PROMPT, "lora": "a"},
            {"tokens": LORA_PROMPT, "lora": "b"},
            {"tokens": LORA_PROMPT, "lora": "a@moved"},
        ]
    ),
    "salt": Step(
        [
            {"tokens": SALT_PROMPT, "cache_salt": "tenant-1"},
            {"tokens": SALT_PROMPT, "cache_salt": "tenant-2"},
            {"tokens": SALT_PROMPT, "cache_salt": "tenant-1"},
            SALT_PROMPT,
        ]
    ),
    "embeds": Step(
        [
            {"tokens": EMBEDS_PROMPT, "embeds_seed": 5},
            {"tokens": EMBEDS_PROMPT, "embeds_seed": 5},
            {"tokens": EMBEDS_PROMPT, "embeds_seed": 6},
        ]
    ),
    "before reset": Step([RESET_PROMPT, RESET_PROMPT]),
    "reset": Step(reset=True),
    "after reset": Step([RESET_PROMPT]),
    "turn 1": Step([TURN_1], max_tokens=TURN_1_TOKENS),
    "turn 2": Step([{"after": [6, 0], "tokens": TURN_2_MESSAGE}]),
}
STEP = {name: i for i, name in enumerate(STEPS)}
assert STEPS["turn 2"].prompts[0]["after"] == [STEP["turn 1"], 0]
LLM_ARGS = {"enable_lora": True, "max_lora_rank": 8, "max_loras": 2, "enable_prompt_embeds": True}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run]:
    """(without kvtier, with kvtier) over every step, with three LoRA adapters: a, b, and the
    name a pointed at another adapter's weights."""
    model = str(tiny_model.build())
    adapters = tmp_path_factory.mktemp("adapters")
    a = lora_adapter.build(adapters / "a", model, seed=1)
    b = lora_adapter.build(adapters / "b", model, seed=2)
    moved = lora_adapter.build(adapters / "a2", model, seed=3)
    loras = {"a": [1, str(a)], "b": [2, str(b)], "a@moved": [3, str(moved)]}
    steps = list(STEPS.values())
    both = [start(model, steps, c, llm=LLM_ARGS, loras=loras) for c in (None, CONNECTOR)]
    without, with_kvtier = (r.result() for r in both)
    same_runtime(without_kvtier=without, with_kvtier=with_kvtier)
    return without, with_kvtier


def outputs(r: Run, name: str) -> list[list[int]]:
    return r.tokens(STEP[name])


def hits(r: Run, name: str) -> list[int]:
    return r.cached(STEP[name])


@pytest.mark.parametrize("name", [n for n in STEPS if n != "reset"])
def test_every_output_equals_vllm_without_kvtier(runs: tuple[Run, Run], name: str) -> None:
    without, with_kvtier = runs
    assert outputs(with_kvtier, name) == outputs(without, name)


def test_lora_adapters_never_share_kv(runs: tuple[Run, Run]) -> None:
    """The base model and adapters a and b give different outputs for one prompt, so a wrong
    adapter's KV would show. No request hits another adapter's chunks (nor the base model's);
    each adapter's second request hits its own; the name a pointed at another path misses."""
    _, got = runs
    base, a, b, a_again, b_again, moved = outputs(got, "lora")
    assert len({tuple(base), tuple(a), tuple(b), tuple(moved)}) == 4
    assert (a_again, b_again) == (a, b)
    assert hits(got, "lora") == [0, 0, 0, 2 * CHUNK, 2 * CHUNK, 0]


def test_cache_salt_isolates_tenants(runs: tuple[Run, Run]) -> None:
    """Same prompt: another salt misses, the same salt hits, no salt misses salted chunks."""
    _, got = runs
    assert hits(got, "salt") == [0, 0, 2 * CHUNK, 0]


def test_prompt_embeds_are_served_and_keyed_by_their_embeddings(runs: tuple[Run, Run]) -> None:
    """Prompt-embeds requests (token ids all 0) hit only for the same embeddings."""
    _, got = runs
    first, again, other = outputs(got, "embeds")
    assert again == first and other != first
    assert hits(got, "embeds") == [0, 2 * CHUNK, 0]


def test_reset_prefix_cache_with_connector_makes_the_next_request_miss(
    runs: tuple[Run, Run],
) -> None:
    """LLM.reset_prefix_cache(reset_connector=True) succeeds, the prompt stored before it misses
    after it, and the CPU tier was emptied: at the end it holds only what was saved after the
    reset (the reset prompt's 2 chunks, and turn 1's 2: its prompt's and its answer's)."""
    _, got = runs
    assert hits(got, "before reset") == [0, 2 * CHUNK]
    assert got.steps[STEP["reset"]] == {"reset": True}
    assert hits(got, "after reset") == [0]
    assert got.stats["entries"] == 4


def test_second_turn_hits_the_first_turns_answer(runs: tuple[Run, Run]) -> None:
    """Turn 2 is turn 1's prompt, its answer and a new message: it hits two chunks, one of them
    mostly the answer (turn 1's prompt alone fills one chunk), so decode chunks were saved."""
    _, got = runs
    assert len(outputs(got, "turn 1")[0]) == TURN_1_TOKENS
    assert len(TURN_1) < 2 * CHUNK <= len(TURN_1) + TURN_1_TOKENS
    assert hits(got, "turn 2") == [2 * CHUNK]
