"""Runs real vLLM (CPU) on prompts and prints what happened as one JSON line.

Used by the end-to-end tests, each run in a fresh process (vLLM starts its own processes, and a
JVM must never be forked). Input: one JSON object on the command line::

    {"model": "/path", "prompts": [[token ids], ...], "max_tokens": 8,
     "connector": {"kv_connector": "KVTierConnector", ...} or null,
     "rounds": 2,            # each round generates every prompt again, one prompt at a time
     "batch": false,         # true: a round submits all prompts at once
     "llm": {...}}           # extra LLM(...) arguments

Output (last stdout line): {"rounds": [[{"tokens": [...], "cached": n, "seconds": s}, ...], ...],
"kvtier": {counter: value} when the kvtier worker runs in this process, else {}}
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    spec = json.loads(sys.argv[1])
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    args = dict(
        model=spec["model"],
        dtype="bfloat16",
        max_model_len=spec.get("max_model_len", 4096),
        enforce_eager=True,
        enable_prefix_caching=False,
        gpu_memory_utilization=0.2,
        seed=0,
    )
    if spec.get("connector") is not None:
        args["kv_transfer_config"] = spec["connector"]
    args.update(spec.get("llm", {}))
    llm = LLM(**args)
    params = SamplingParams(max_tokens=spec.get("max_tokens", 8), temperature=0.0, ignore_eos=True)
    rounds = []
    groups = [spec["prompts"]] if spec.get("batch") else [[p] for p in spec["prompts"]]
    for _ in range(spec.get("rounds", 1)):
        results = []
        for group in groups:
            start = time.perf_counter()
            outs = llm.generate(
                [TokensPrompt(prompt_token_ids=p) for p in group], params, use_tqdm=False
            )
            seconds = time.perf_counter() - start
            results.extend(
                {
                    "tokens": list(out.outputs[0].token_ids),
                    "cached": int(out.num_cached_tokens or 0),
                    "seconds": seconds,
                }
                for out in outs
            )
        rounds.append(results)
    stats = {}
    if spec.get("connector") is not None:
        from kvtier.vllm.worker import local_worker

        engine_id = str(llm.llm_engine.vllm_config.kv_transfer_config.engine_id)
        worker = local_worker(engine_id)
        stats = worker.stats() if worker is not None else {}
    print(json.dumps({"rounds": rounds, "kvtier": stats}), flush=True)


if __name__ == "__main__":
    main()
