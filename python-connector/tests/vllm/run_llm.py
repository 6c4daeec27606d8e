"""Runs real vLLM (CPU) on prompts and prints what happened as one JSON line.

Used by the end-to-end tests, each run in a fresh process (a JVM must never be forked, and each
kvtier configuration needs its own engine). One engine serves every step of a run, so several
test cases that share a configuration share one vLLM start. Input: one JSON object on the
command line::

    {"model": "/path", "max_tokens": 8, "dtype": "float32",
     "connector": {"kv_connector": "KVTierConnector", ...} or null,
     "steps": [{"prompts": [prompt, ...], "batch": false}, ...],
                             # each step generates its prompts in order: one at a time, or all at
                             # once with "batch": true; a step {"reset": true} calls
                             # LLM.reset_prefix_cache(reset_connector=True) instead
     "loras": {"name": [int id, "/path"], ...},
     "llm": {...}}           # extra LLM(...) arguments

A prompt is a list of token ids, or an object: {"tokens": [...], "lora": "name" (a key of
"loras"), "cache_salt": "...", "embeds_seed": n (the tokens' positions given as seeded random
prompt embeddings instead), "after": [step, index] (the prompt is that earlier result's prompt and
generated tokens, then "tokens")}.

Output (last stdout line): {"steps": [[{"tokens": [...], "cached": n, "seconds": s}, ...] or
{"reset": true|false}, ...],
"dtype": the dtype the model ran in, "threads": [torch threads of each worker process],
"kvtier": {counter: value} when the kvtier worker runs in this process, else {}}

The caller sets the threading (examples/vllm_cpu.py); the reported threads are what each worker
really computed with, asked of the workers themselves.

With ``KVTIER_TEST_GATE_FD`` set, the run stops once vLLM is up: it writes ``ready`` to that file
descriptor and waits for a line on stdin before its first step, so a caller can start several
runs at once (a start is mostly imports on one core) and still let their steps run one at a time.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _prompt(entry: object, steps: list, loras: dict, hidden: int) -> tuple[dict, object]:
    """vLLM's prompt and LoRA request for one prompt entry; ``steps`` are the results so far."""
    if isinstance(entry, list):
        return {"prompt_token_ids": entry}, None
    tokens = list(entry.get("tokens", []))
    if "after" in entry:
        step, index = entry["after"]
        earlier = steps[step][index]
        tokens = earlier["prompt"] + earlier["tokens"] + tokens
    prompt: dict = {"prompt_token_ids": tokens}
    if "embeds_seed" in entry:
        import torch

        g = torch.Generator().manual_seed(entry["embeds_seed"])
        prompt = {"prompt_embeds": torch.randn(len(tokens), hidden, generator=g) * 0.5}
    if "cache_salt" in entry:
        prompt["cache_salt"] = entry["cache_salt"]
    lora = None
    if "lora" in entry:
        from vllm.lora.request import LoRARequest

        name = entry["lora"]
        lora_id, path = loras[name]
        lora = LoRARequest(name.split("@")[0], lora_id, path)
    return prompt, lora


def main() -> None:
    spec = json.loads(sys.argv[1])
    gate = os.environ.pop("KVTIER_TEST_GATE_FD", None)
    if gate:  # vLLM's own processes must not hold it: the caller reads its end to the end
        os.set_inheritable(int(gate), False)
    from vllm import LLM, SamplingParams

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
    if gate:
        os.write(int(gate), b"ready\n")
        os.close(int(gate))
        sys.stdin.readline()
    hidden = int(llm.llm_engine.model_config.get_hidden_size())
    loras = spec.get("loras", {})
    steps: list = []
    for step in spec["steps"]:
        if step.get("reset"):
            _drain(llm)
            steps.append({"reset": bool(llm.reset_prefix_cache(reset_connector=True))})
            continue
        params = SamplingParams(
            max_tokens=step.get("max_tokens", spec.get("max_tokens", 8)),
            temperature=0.0,
            ignore_eos=True,
        )
        prompts = [_prompt(p, steps, loras, hidden) for p in step["prompts"]]
        groups = [prompts] if step.get("batch") else [[p] for p in prompts]
        results = []
        for group in groups:
            start = time.perf_counter()
            outs = llm.generate(
                [p for p, _ in group],
                params,
                use_tqdm=False,
                lora_request=[lora for _, lora in group],
            )
            seconds = time.perf_counter() - start
            results.extend(
                {
                    "prompt": list(out.prompt_token_ids or []),
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
        if worker is not None:  # vLLM's KV cache groups as kvtier serves them
            stats["kv_cache_groups"] = worker.groups.count
            stats["sliding_groups"] = len(worker.groups.sliding_windows())
    dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
    threads = llm.collective_rpc(_torch_threads)
    print(
        json.dumps({"steps": steps, "dtype": dtype, "threads": threads, "kvtier": stats}),
        flush=True,
    )


def _drain(llm: object) -> None:
    """Steps the in-process engine until no finished request holds blocks any more: a connector
    that saves after a request finished keeps its blocks until the workers report the save,
    which they do in a later step, and vLLM's own cache reset fails while blocks are in use.
    Waits on that event; fails (never passes) after 120 s."""
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    deadline = time.monotonic() + 120
    while scheduler.has_requests():
        if time.monotonic() > deadline:
            raise SystemExit("finished requests still held blocks after 120 s")
        llm.llm_engine.step()


def _torch_threads(worker: object) -> int:
    """Runs in each vLLM worker process: the intra-op threads its forward passes use."""
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
