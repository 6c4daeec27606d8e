"""kvtier's figures on a real ``vllm serve``'s ``/metrics`` and stats log, checked against what
the responses reported.

Two servers share one disk tier. The first (vLLM's prefix cache off, so every cached token is
kvtier's) answers a prompt twice: the second time from kvtier's CPU tier. The second server starts
with an empty CPU tier and vLLM's defaults (prefix cache on, but empty): the prompt hits kvtier's
disk. Each time kvtier's series must equal what happened: hit tokens by source equal the cached
tokens the response reported and vLLM's own ``prompt_tokens_cached_by_source``; tokens and bytes
loaded and saved follow the model's bytes per token; the tiers' gauges show what they hold.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "vllm", reason="vLLM (CPU) is not installed; scripts/lib/vllm-env.sh installs it"
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).parents[3]
sys.path.insert(0, str(ROOT / "examples"))

import tiny_model  # noqa: E402
import vllm_server  # noqa: E402
from waiting import wait_until  # noqa: E402

from kvtier.vllm.stats import METRICS  # noqa: E402

CHUNK = 256
PROMPT_TOKENS = 4 * CHUNK + 100
"""Four whole chunks and a tail of three whole 32-token blocks (and 4 tokens)."""
STORED = 4 * CHUNK + 3 * 32
"""What kvtier stores of the prompt: its chunks and the tail's whole blocks."""
DTYPE = "float32"


def complete(server: vllm_server.Server, prompt: list[int]) -> int:
    """Sends one greedy completion; returns the cached prompt tokens its usage reported."""
    body = {
        "model": json.load(urllib.request.urlopen(f"{server.url}/v1/models"))["data"][0]["id"],
        "prompt": prompt,
        "max_tokens": 2,
        "temperature": 0.0,
    }
    request = urllib.request.Request(
        f"{server.url}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        usage: dict[str, Any] = json.load(response)["usage"]
    return int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


def kvtier(server: vllm_server.Server, name: str, **labels: str) -> float:
    return server.metric(name, **labels)


def test_metrics_follow_what_the_responses_reported(tmp_path: Path) -> None:
    model = str(tiny_model.build(spec=tiny_model.SMALL))
    per_token = tiny_model.kv_bytes_per_token(tiny_model.SMALL, DTYPE)
    settings = {
        "max_local_cpu_size": 64 * CHUNK * per_token / 2**30,
        "local_disk": str(tmp_path / "kv"),
        "max_local_disk_size": 1,
    }
    prompt = tiny_model.prompt(PROMPT_TOKENS, seed=11, spec=tiny_model.SMALL)
    args = ["--block-size", "32", "--max-model-len", "2048"]
    args += ["--kv-cache-memory-bytes", str(256 << 20)]
    # vLLM logs its stats line at DEBUG when the engine is idle at the tick, as it is here
    env = {"VLLM_LOG_STATS_INTERVAL": "1", "VLLM_LOGGING_LEVEL": "DEBUG"}

    with vllm_server.serve(
        model, dtype=DTYPE, connector=settings, env=env, log_dir=tmp_path,
        args=[*args, "--no-enable-prefix-caching"],
    ) as server:  # fmt: skip
        assert complete(server, prompt) == 0
        cached = complete(server, prompt)
        assert cached == PROMPT_TOKENS - 4, "every whole block stored but the last token's"
        names = {name for name, _, _ in server.metrics()}
        assert {n for n in METRICS if METRICS[n].kind == "counter"} & {
            n.removesuffix("_total") for n in names
        }, "no kvtier series on /metrics"
        assert kvtier(server, "kvtier_hit_tokens_total", source="cpu") == cached
        assert kvtier(server, "kvtier_hit_tokens_total") == cached
        assert server.metric("vllm:prompt_tokens_cached_by_source_total", source="host") == cached
        assert kvtier(server, "kvtier_lookups_total") == 2
        assert kvtier(server, "kvtier_lookup_tokens_total") == 2 * PROMPT_TOKENS
        assert kvtier(server, "kvtier_loaded_tokens_total") == cached
        assert kvtier(server, "kvtier_loaded_bytes_total") == cached * per_token
        assert kvtier(server, "kvtier_saved_bytes_total") == STORED * per_token
        assert kvtier(server, "kvtier_tier_bytes", tier="cpu", rank="0") == STORED * per_token
        assert kvtier(server, "kvtier_tier_puts_total", tier="cpu") == 5
        assert kvtier(server, "kvtier_load_seconds_count") == 1
        assert kvtier(server, "kvtier_save_seconds_count") >= 1
        assert kvtier(server, "kvtier_lookup_seconds_count") == 2
        assert kvtier(server, "kvtier_failed_loads_total") == 0
        assert kvtier(server, "kvtier_dropped_saves_total") == 0
        assert server.alive()
        wait_until(
            lambda: re.search(r"KV Transfer metrics: .*hit_tokens_cpu=", server.log_text()),
            "vLLM's stats log line shows kvtier's hits",
        )
        log = server.log_text()
        mib = CHUNK * per_token / 2**20
        assert f"kvtier: rank 0 CPU tier: 0.06 GiB (64 chunks of {mib:.1f} MiB) in memory" in log
        disk = f"1.00 GiB ({2**30 // (CHUNK * per_token)} chunks of {mib:.1f} MiB)"
        assert f"kvtier: rank 0 disk tier: {disk} in {tmp_path / 'kv'}" in log

    with vllm_server.serve(
        model, dtype=DTYPE, connector=settings, env=env, log_dir=tmp_path, args=args
    ) as server:
        assert kvtier(server, "kvtier_hit_tokens_total") == 0
        cached = complete(server, prompt)
        assert cached == PROMPT_TOKENS - 4, "the disk tier serves the prompt after a restart"
        assert kvtier(server, "kvtier_hit_tokens_total", source="disk") == cached
        assert kvtier(server, "kvtier_hit_tokens_total", source="cpu") == 0
        assert server.metric("vllm:prompt_tokens_cached_by_source_total", source="disk") == cached
        assert kvtier(server, "kvtier_loaded_bytes_total") == cached * per_token
        assert kvtier(server, "kvtier_tier_chunks", tier="disk", rank="0") == 5
        assert kvtier(server, "kvtier_errors_total") == 0
