"""Asks a running vLLM server the same long prompt twice and prints the time to first token.

The first request computes the prompt's KV cache (kvtier saves it); the second loads it from
kvtier instead of recomputing it. Start vLLM with kvtier first, for example::

    vllm serve MODEL --kv-transfer-config \
        '{"kv_connector":"KVTierConnector","kv_role":"kv_both"}' \
        --no-enable-prefix-caching --enable-prompt-tokens-details

then: python examples/query_twice.py --url http://127.0.0.1:8000 --tokens 8000

vLLM's own prefix cache is turned off above so that the second request's hit is kvtier's; with it
on, both would help. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import urllib.request
from typing import Any


def first_token(url: str, model: str, prompt: list[int], max_tokens: int) -> tuple[float, int]:
    """Streams one completion; returns (seconds to the first token, prompt tokens cached)."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    request = urllib.request.Request(
        f"{url}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    start = time.perf_counter()
    ttft = None
    cached = 0
    with urllib.request.urlopen(request, timeout=600) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event: dict[str, Any] = json.loads(line[len("data: ") :])
            if (
                ttft is None
                and event.get("choices")
                and event["choices"][0].get("text") is not None
            ):
                ttft = time.perf_counter() - start
            usage = event.get("usage") or {}
            details = usage.get("prompt_tokens_details") or {}
            cached = int(details.get("cached_tokens") or cached)
    if ttft is None:
        raise RuntimeError("the server streamed no token")
    return ttft, cached


def served_model(url: str) -> str:
    with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as response:
        return json.load(response)["data"][0]["id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--tokens", type=int, default=8000, help="prompt length in tokens")
    parser.add_argument("--vocab", type=int, default=8192, help="token ids are drawn below this")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None, help="prompt seed (default: random)")
    args = parser.parse_args()

    model = served_model(args.url)
    rng = random.Random(args.seed)
    prompt = [rng.randrange(3, args.vocab) for _ in range(args.tokens)]
    cold, cold_cached = first_token(args.url, model, prompt, args.max_tokens)
    warm, warm_cached = first_token(args.url, model, prompt, args.max_tokens)
    print(f"prompt: {args.tokens} tokens, model {model}")
    print(f"cold TTFT: {cold * 1000:8.1f} ms   (cached tokens: {cold_cached})")
    print(f"warm TTFT: {warm * 1000:8.1f} ms   (cached tokens: {warm_cached})")
    print(f"speed-up:  {cold / warm:8.1f}x")


if __name__ == "__main__":
    main()
