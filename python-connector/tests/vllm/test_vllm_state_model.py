"""A hybrid state model end to end with real vLLM on CPU: LFM2 (short-convolution state layers
and full-attention layers), which vLLM's CPU backend serves with its hybrid KV cache manager and
prefix cache (``mamba_cache_mode="align"``). kvtier does not serve state groups
(``kvtier.vllm.groups``): with kvtier configured vLLM must not start, and the message names the
groups, never a model that starts and then answers with a state that is not the prompt's.
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
from vllm_runs import CHUNK, CONNECTOR, Step, start  # noqa: E402

PROMPT = tiny_model.prompt(2 * CHUNK + 30, seed=81)
STEPS = [Step([PROMPT]), Step([PROMPT])]
USERS = {"enable_prefix_caching": True}


def test_vllm_serves_the_state_model_and_refuses_it_with_kvtier() -> None:
    model = str(tiny_model.build(spec=tiny_model.STATE))
    started = [start(model, STEPS, None, llm=USERS), start(model, STEPS, CONNECTOR, llm=USERS)]
    without = started[0].result()
    assert len(without.tokens(0)[0]) > 0 and without.tokens(1) == without.tokens(0)
    with pytest.raises(AssertionError, match="vLLM run failed") as failed:
        started[1].result()
    message = str(failed.value)
    assert "kvtier cannot serve this model's KV cache groups" in message, message[-3000:]
    assert "MambaSpec" in message and "full attention" in message
    assert "short-convolution state" in message
    assert "Start vLLM without kvtier for this model" in message
