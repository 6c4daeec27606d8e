"""kvtier's demo: vLLM (CPU) with kvtier serves the same long prompt twice; prints the cold and
warm time to first token, and what they ran on.

Run by ``scripts/demo`` after it has installed everything; on its own:
``python examples/demo.py [--tokens 8000]`` (``KVTIER_CONFIG_FILE`` picks the tiers; the default
is examples/configs/cpu.yaml). vLLM runs in the dtype that this CPU multiplies natively
(bfloat16 with AVX512-BF16 or AMX, float32 elsewhere) with one OpenMP thread per core; its log
goes to a file named at start-up.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import query_twice  # noqa: E402
import tiny_model  # noqa: E402
import vllm_cpu  # noqa: E402
import vllm_server  # noqa: E402


def say(message: str) -> None:
    print(f"kvtier demo: {message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8000, help="prompt length in tokens")
    args = parser.parse_args()

    cpu = vllm_cpu.cpu()
    dtype, why = vllm_cpu.choose_dtype(cpu)
    threads = vllm_cpu.threads(cpu)
    say(f"CPU {cpu.describe()}; dtype {dtype} ({why}); {threads} OpenMP threads")

    if not (tiny_model.default_cache_dir() / tiny_model.SPEC.name).is_dir():
        say("building the local test model (random weights, local tokenizer; once, ~30 s)...")
    model = str(tiny_model.build())
    say(f"model {model}")

    os.environ.setdefault("KVTIER_CONFIG_FILE", str(HERE / "configs" / "cpu.yaml"))
    say(f"tiers from {os.environ['KVTIER_CONFIG_FILE']}")
    flags = ["--max-model-len", "20000", "--max-num-batched-tokens", "20000"]
    flags += ["--gpu-memory-utilization", "0.3", "--no-enable-prefix-caching"]
    next_note = [10.0]

    def starting(seconds: float) -> None:
        if seconds >= next_note[0]:
            say(f"  vLLM still starting ({seconds:.0f} s)")
            next_note[0] += 10

    say("starting vLLM with kvtier (vLLM's own prefix cache off, so the hit is kvtier's)...")
    with vllm_server.serve(model, dtype=dtype, connector={}, args=flags, on_wait=starting) as srv:
        say(f"vLLM ready at {srv.url}; its log: {srv.log}")
        ran = srv.runtime()
        if ran["dtype"] != dtype or ran["threads"] != [threads]:
            say(f"warning: vLLM reports dtype {ran['dtype']} and threads {ran['threads']}")
        name = query_twice.served_model(srv.url)
        rng = random.Random(7)
        prompt = [rng.randrange(3, tiny_model.SPEC.vocab_size) for _ in range(args.tokens)]
        say(f"cold request: {args.tokens} tokens, computed and saved by kvtier...")
        start = time.perf_counter()
        cold, cold_cached = query_twice.first_token(srv.url, name, prompt, 16)
        say(f"  done in {time.perf_counter() - start:.1f} s")
        say("warm request: the same prompt, loaded from kvtier...")
        warm, warm_cached = query_twice.first_token(srv.url, name, prompt, 16)

    print(f"prompt: {args.tokens} tokens, model {model}")
    print(f"ran on: {cpu.describe()}, {dtype}, {threads} threads")
    print(f"cold TTFT: {cold * 1000:8.1f} ms   (cached tokens: {cold_cached})")
    print(f"warm TTFT: {warm * 1000:8.1f} ms   (cached tokens: {warm_cached})")
    print(f"speed-up:  {cold / warm:8.1f}x")


if __name__ == "__main__":
    main()
