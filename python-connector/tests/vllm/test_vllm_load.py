"""Under load, as a busy server meets it: real ``vllm serve`` on CPU, a KV cache smaller than the
concurrent working set, vLLM's prefix cache on (its default), kvtier with a small CPU tier and a
disk tier, 8 concurrent streamed requests over shared prefixes, some of them aborted mid-stream
(the client hangs up).

The same requests go to vLLM without kvtier, with the same threading and dtype. Zero engine
deaths, zero failed requests, and every completed request's tokens compared with the run without
kvtier: in float32 all equal; in bfloat16 a difference is accepted only at a near-tie (see
``NEAR_TIE``), since bfloat16 rounding depends on how a prefill is split, and kvtier's hits split
prefills differently from vLLM's own prefix cache.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "vllm", reason="vLLM (CPU) is not installed; scripts/lib/vllm-env.sh installs it"
)
aiohttp = pytest.importorskip("aiohttp", reason="aiohttp comes with vLLM")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).parents[3]
sys.path.insert(0, str(ROOT / "examples"))

import tiny_model  # noqa: E402
import vllm_cpu  # noqa: E402
import vllm_server  # noqa: E402

CHUNK = 256
PREFIXES, PREFIX_TOKENS, SUFFIX_TOKENS, OUTPUT_TOKENS = 6, 4 * CHUNK, 96, 12
REQUESTS, CONCURRENCY = 36, 8
ABORT_EVERY = 5
"""Every 5th request is abandoned by its client after its second streamed token."""
BLOCK_TOKENS, KV_BLOCKS = 32, 96
"""vLLM's KV cache: 96 blocks of 32 tokens hold 3072 tokens, under three of the 8 concurrent
requests (1120 tokens each): allocations fail, requests wait and are preempted, and vLLM's prefix
cache evicts the prefixes that kvtier then serves."""
NEAR_TIE = 0.25
"""Largest top-2 logprob margin (nats) at which a bfloat16 greedy token may differ from the run
without kvtier. bfloat16 keeps 8 significant bits, so a logit carries a rounding error near 2**-8
of its size; this model's logits reach about 8 in magnitude (6.9 to 8.0 measured over six prompts
of this test's length), so each of the two leading logits can move by about 0.03 with a different
prefill split, and the margin by about 0.06 for each rounding that lands differently. 0.25 allows
four such roundings to compound; a token decided by a wider margin changes only when the KV cache
itself is wrong."""
MAX_DIFFERING = 0.25
"""Largest share of completed bfloat16 requests whose tokens may differ at all. About half of this
random model's tokens are decided by margins under NEAR_TIE, so one wrong-KV divergence could hide
among near-ties; a wrong KV cache changes most requests that hit it, and this bound catches that."""


@dataclass
class Outcome:
    """One request as its client saw it."""

    tokens: list[int] = field(default_factory=list)
    margins: list[float] = field(default_factory=list)
    """Top-2 logprob margin at each generated token."""
    cached: int = 0
    aborted: bool = False
    error: str | None = None


def workload(seed: int = 3) -> list[list[int]]:
    """REQUESTS prompts, each one of PREFIXES shared prefixes and its own suffix, in a seeded
    order in which prefixes recur after others have pushed them out of vLLM's cache."""
    rng = random.Random(seed)
    spec = tiny_model.SMALL
    prefixes = [tiny_model.prompt(PREFIX_TOKENS, seed=100 + i, spec=spec) for i in range(PREFIXES)]
    suffixes = [tiny_model.prompt(SUFFIX_TOKENS, seed=1000 + i, spec=spec) for i in range(REQUESTS)]
    return [prefixes[rng.randrange(PREFIXES)] + suffix for suffix in suffixes]


async def _one(
    session: aiohttp.ClientSession, url: str, model: str, prompt: list[int], abort: bool
) -> Outcome:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": OUTPUT_TOKENS,
        "temperature": 0.0,
        "ignore_eos": True,
        "logprobs": 2,
        "return_tokens_as_token_ids": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out = Outcome()
    try:
        async with session.post(f"{url}/v1/completions", json=body) as response:
            if response.status != 200:
                out.error = f"HTTP {response.status}: {(await response.text())[:500]}"
                return out
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event: dict[str, Any] = json.loads(line[len("data: ") :])
                if event.get("error"):
                    out.error = str(event["error"])[:500]
                    return out
                for choice in event.get("choices") or ():
                    _take(out, choice.get("logprobs") or {})
                usage = event.get("usage") or {}
                details = usage.get("prompt_tokens_details") or {}
                out.cached = int(details.get("cached_tokens") or out.cached)
                if abort and len(out.tokens) >= 2:
                    out.aborted = True
                    response.close()  # the client hangs up; vLLM aborts the request
                    return out
    except aiohttp.ClientError as e:
        out.error = f"{type(e).__name__}: {e}"
    return out


def _take(out: Outcome, logprobs: dict[str, Any]) -> None:
    tokens, tops = logprobs.get("tokens") or [], logprobs.get("top_logprobs") or []
    for token, top in zip(tokens, tops, strict=True):
        out.tokens.append(int(str(token).removeprefix("token_id:")))
        best = sorted((top or {}).values(), reverse=True)
        out.margins.append(best[0] - best[1] if len(best) > 1 else float("inf"))


async def _drive(url: str, prompts: list[list[int]]) -> list[Outcome]:
    timeout = aiohttp.ClientTimeout(total=900)
    limit = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(f"{url}/v1/models") as response:
            model = (await response.json())["data"][0]["id"]

        async def limited(i: int, prompt: list[int]) -> Outcome:
            abort = i % ABORT_EVERY == ABORT_EVERY - 1
            async with limit:
                return await _one(session, url, model, prompt, abort)

        return list(await asyncio.gather(*(limited(i, p) for i, p in enumerate(prompts))))


def server_config(
    model: str, dtype: str, connector: dict[str, Any] | None, log_dir: Path
) -> dict[str, Any]:
    """The server of this test, with kvtier when ``connector`` is set."""
    args = [
        "--block-size",
        str(BLOCK_TOKENS),
        "--num-gpu-blocks-override",
        str(KV_BLOCKS),
        "--max-model-len",
        "2048",
        "--max-num-seqs",
        str(CONCURRENCY),
        "--kv-cache-memory-bytes",
        str(256 << 20),
    ]
    return {
        "model": model,
        "dtype": dtype,
        "connector": connector,
        "args": args,
        "log_dir": log_dir,
    }


def drive(server: vllm_server.Server) -> tuple[list[Outcome], dict[str, Any], bool]:
    """Sends the workload to ``server``, then stops it; returns the outcomes, what the server ran
    with, and whether its engine was alive at the end."""
    outcomes = asyncio.run(_drive(server.url, workload()))
    alive = server.alive()
    if not alive:
        print(f"vLLM's log ({server.log}) from its first error:\n{server.first_error()}")
    runtime = server.runtime()
    vllm_server.stop(server.proc, timeout_s=60)  # idle, it would still hold memory
    return outcomes, runtime, alive


@pytest.fixture(scope="module")
def small_model() -> str:
    return str(tiny_model.build(spec=tiny_model.SMALL))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_concurrent_load_with_aborts_never_kills_the_engine_nor_changes_tokens(
    small_model: str, dtype: str, tmp_path: Path
) -> None:
    """36 streamed requests, 8 at a time, over 6 shared prefixes, every 5th abandoned after two
    tokens, through a KV cache of under three requests: with kvtier (CPU tier of 8 chunks, disk
    tier) the engine stays alive, every request is served, and kvtier's tokens equal vLLM's
    without kvtier (bfloat16: except at near-ties)."""
    chunk_gb = tiny_model.kv_bytes_per_token(tiny_model.SMALL, dtype) * CHUNK / 2**30
    settings = {
        "max_local_cpu_size": 8 * chunk_gb,
        "local_disk": str(tmp_path / "kv"),
        "max_local_disk_size": 1,
    }
    with vllm_server.serve_together(  # one after the other, each alone on the cores
        server_config(small_model, dtype, None, tmp_path),
        server_config(small_model, dtype, settings, tmp_path),
    ) as (without, with_kvtier):
        base, base_runtime, base_alive = drive(without)
        got, got_runtime, got_alive = drive(with_kvtier)
    vllm_cpu.check_same_runtime({"without kvtier": base_runtime, "with kvtier": got_runtime})
    assert base_alive, "vLLM without kvtier died under the load"
    assert got_alive, "vLLM's engine died under the load with kvtier"
    for name, run in (("without kvtier", base), ("with kvtier", got)):
        failed = {i: o.error for i, o in enumerate(run) if o.error}
        assert not failed, f"requests failed {name}: {failed}"
        short = [i for i, o in enumerate(run) if not o.aborted and len(o.tokens) != OUTPUT_TOKENS]
        assert not short, f"requests {short} returned fewer than {OUTPUT_TOKENS} tokens {name}"
    assert sum(o.aborted for o in got) == REQUESTS // ABORT_EVERY
    assert sum(o.cached for o in got) > sum(o.cached for o in base), (
        "kvtier served no prompt tokens that vLLM's own prefix cache did not"
    )
    differing = []
    for i, (b, g) in enumerate(zip(base, got, strict=True)):
        if b.aborted or b.tokens == g.tokens:
            continue
        first = next(k for k, (x, y) in enumerate(zip(b.tokens, g.tokens, strict=False)) if x != y)
        differing.append((i, first, min(b.margins[first], g.margins[first])))
    if dtype == "float32":
        assert not differing, f"(request, first differing token, top-2 margin): {differing}"
    else:
        wide = [d for d in differing if d[2] > NEAR_TIE]
        assert not wide, f"differences at margins above {NEAR_TIE}: {wide} (all: {differing})"
        completed = sum(not o.aborted for o in base)
        assert len(differing) <= MAX_DIFFERING * completed, (
            f"{len(differing)} of {completed} requests differ: {differing}"
        )
    print(f"{dtype}: (request, first differing token, top-2 margin) {differing}")
