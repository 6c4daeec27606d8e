"""Runs real vLLM (CPU) on prompts and prints what happened as one JSON line.

Used by the end-to-end tests, each run in a fresh process (a JVM must never be forked, and each
kvtier configuration needs its own engine). One engine serves every step of a run, so several
test cases that share a configuration share one vLLM start. Input: one JSON object on the
command line::

    {"model": "/path", "max_tokens": 8, "dtype": "float32",
     "connector": {"kv_connector": "KVTierConnector", ...} or null,
     "steps": [{"prompts": [[token ids], ...], "batch": false}, ...],
                             # each step generates its prompts in order: one at a time, or all at
                             # once with "batch": true
     "llm": {...}}           # extra LLM(...) arguments

Output (last stdout line): {"steps": [[{"tokens": [...], "cached": n, "seconds": s}, ...], ...],
"dtype": the dtype the model ran in, "threads": [torch threads of each worker process],
"kvtier": {counter: value} when the kvtier worker runs in this process, else {}}

The caller sets the threading (examples/vllm_cpu.py); the reported threads are what each worker
really computed with, asked of the workers themselves.
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
        dtype=spec.get("dtype", "float32"),
        max_model_len=spec.get("max_model_len", 4096),
        enforce_eager=True,
        enable_prefix_caching=False,
        kv_cache_memory_bytes=spec.get("kv_cache_bytes", 256 << 20),
        seed=0,
    )
    if spec.get("connector") is not None:
        args["kv_transfer_config"] = spec["connector"]
    args.update(spec.get("llm", {}))
    llm = LLM(**args)
    params = SamplingParams(max_tokens=spec.get("max_tokens", 8), temperature=0.0, ignore_eos=True)
    steps = []
    for step in spec["steps"]:
        prompts = step["prompts"]
        groups = [prompts] if step.get("batch") else [[p] for p in prompts]
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
        steps.append(results)
    stats = {}
    if spec.get("connector") is not None:
        from kvtier.vllm.worker import local_worker

        engine_id = str(llm.llm_engine.vllm_config.kv_transfer_config.engine_id)
        worker = local_worker(engine_id)
        stats = worker.stats() if worker is not None else {}
    dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
    threads = llm.collective_rpc(_torch_threads)
    print(
        json.dumps({"steps": steps, "dtype": dtype, "threads": threads, "kvtier": stats}),
        flush=True,
    )


def _torch_threads(worker: object) -> int:
    """Runs in each vLLM worker process: the intra-op threads its forward passes use."""
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
