"""kvtier's CUDA data path against torch's own GPU <-> pinned copy, on one GPU, in one run.

    python benchmarks/gpu_bench.py [--tokens 2048] [--repeats 20] [--json out.json]

Geometry of Llama-3.1-8B: 32 layers, 8 KV heads of 128, bf16, blocks of 16 tokens, in vLLM 0.32's
per-layer layout ([blocks, heads, 16, 256] viewed over NHD memory), 128 KiB per token; 2048
tokens are 256 MiB. The blocks of the prompt are a random permutation, as vLLM's allocator gives.

Prints, in GB/s (10^9 bytes per second), each the median of ``--repeats``:

- baseline: ``pinned.copy_(gpu, non_blocking=True)`` of one contiguous tensor of the same bytes,
  device to host (store) and host to device (load), and both at once on two streams;
- kvtier store (gather into pinned 256-token chunks) and load (scatter from them), with the
  chunk bytes crossing the bus through the kernels' device mapping (``mapped``) or through device
  staging and one copy-engine transfer (``dma``); and both at once (a store and a load of other
  blocks on two threads);
- the ratios to the baseline, the goal being >= 0.95 each way and both-at-once >= 1.6x one way;
- the time a layerwise save adds to a forward pass: a stand-in forward (per layer, the matmuls of
  a Llama-8B decoder layer over the prompt's tokens) alone, then with each layer gathered into
  pinned chunks right after that layer's compute was enqueued.

Needs an NVIDIA GPU, torch with CUDA and the kvtier wheel.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

LAYERS, HEADS, HEAD, BLOCK, ELEMENT = 32, 8, 128, 16, 2
CHUNK = 256
GB = 1e9


def _median_seconds(fn: Callable[[], None], repeats: int) -> float:
    import torch

    fn()  # warm-up (JIT of the PTX, first-touch of pinned pages)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    try:
        import torch
    except ImportError:
        print("gpu_bench: torch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA device visible to torch", file=sys.stderr)
        return 2
    from kvtier import _bridge, _jvm
    from kvtier.vllm.layouts import describe

    tokens = args.tokens
    if tokens % CHUNK:
        print(f"gpu_bench: --tokens must be a multiple of {CHUNK}", file=sys.stderr)
        return 2
    blocks_needed = tokens // BLOCK
    num_blocks = 2 * blocks_needed + 64  # room for a second prompt's blocks (both at once)
    per_token = LAYERS * 2 * HEADS * HEAD * ELEMENT
    nbytes = tokens * per_token
    dev = torch.device("cuda", torch.cuda.current_device())

    # vLLM's KV cache: per layer NHD memory [blocks, 16, 8, 256], registered as [B, H, N, 2D].
    layers = [
        torch.randn(num_blocks, BLOCK, HEADS, 2 * HEAD, device=dev, dtype=torch.bfloat16).permute(
            0, 2, 1, 3
        )
        for _ in range(LAYERS)
    ]
    layout = describe({f"l{i}": t for i, t in enumerate(layers)}, block_size=BLOCK,
                      num_heads=HEADS, head_size=HEAD)  # fmt: skip
    ctx = _bridge.worker.cuda_context(dev.index)
    pinned = _bridge.worker.pinned_allocator(ctx)
    addresses = _jvm.long_array(np.array([t.data_ptr() for t in layers], dtype=np.int64))

    rng = random.Random(0)
    order = rng.sample(range(num_blocks), 2 * blocks_needed)
    table_a = _jvm.int_array(np.array(order[:blocks_needed], dtype=np.int32))
    table_b = _jvm.int_array(np.array(order[blocks_needed:], dtype=np.int32))
    chunk_bytes = CHUNK * per_token
    chunks_a = [pinned.allocate(chunk_bytes) for _ in range(tokens // CHUNK)]
    chunks_b = [pinned.allocate(chunk_bytes) for _ in range(tokens // CHUNK)]

    # Baseline: torch's copy of one contiguous tensor of the same bytes.
    gpu_flat = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    host_flat = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    gpu_flat2 = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    host_flat2 = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()

    def torch_d2h() -> None:
        host_flat.copy_(gpu_flat, non_blocking=True)

    def torch_h2d() -> None:
        gpu_flat.copy_(host_flat, non_blocking=True)

    def torch_both() -> None:
        with torch.cuda.stream(s1):
            host_flat.copy_(gpu_flat, non_blocking=True)
        with torch.cuda.stream(s2):
            gpu_flat2.copy_(host_flat2, non_blocking=True)

    out: dict[str, float] = {"bytes": nbytes, "tokens": tokens}
    out["torch_store_gbs"] = nbytes / _median_seconds(torch_d2h, args.repeats) / GB
    out["torch_load_gbs"] = nbytes / _median_seconds(torch_h2d, args.repeats) / GB
    out["torch_both_gbs"] = 2 * nbytes / _median_seconds(torch_both, args.repeats) / GB

    stream = int(torch.cuda.current_stream().cuda_stream)
    for name in ("mapped", "dma"):
        cache = _bridge.worker.gpu_kv_cache(ctx, addresses, layout.paged_layout(), pinned, name,
                                            name)  # fmt: skip

        def store(cache: Any = cache, table: Any = table_a, chunks: Any = chunks_a) -> None:
            cache.recordFence(stream)
            for i, c in enumerate(chunks):
                cache.gather(table, i * CHUNK, CHUNK, c)
            cache.complete()

        def load(cache: Any = cache, table: Any = table_a, chunks: Any = chunks_a) -> None:
            for i, c in enumerate(chunks):
                cache.scatter(c, CHUNK, table, i * CHUNK, 0, CHUNK)
            cache.complete()

        # One persistent loader thread (its copy lanes are made once, in the warm-up round).
        loader = ThreadPoolExecutor(1)

        def both(load: Callable[..., None] = load, store: Callable[[], None] = store,
                 loader: ThreadPoolExecutor = loader) -> None:  # fmt: skip
            other = loader.submit(load, table=table_b, chunks=chunks_b)
            store()
            other.result()

        out[f"kvtier_{name}_store_gbs"] = nbytes / _median_seconds(store, args.repeats) / GB
        out[f"kvtier_{name}_load_gbs"] = nbytes / _median_seconds(load, args.repeats) / GB
        out[f"kvtier_{name}_both_gbs"] = 2 * nbytes / _median_seconds(both, args.repeats) / GB
        loader.shutdown()
        cache.close()

    # Layerwise save during a stand-in forward over the prompt's tokens.
    hidden, inter = 4096, 14336
    x = torch.randn(tokens, hidden, device=dev, dtype=torch.bfloat16)
    w_qkv = torch.randn(hidden, hidden + 2 * HEADS * HEAD, device=dev, dtype=torch.bfloat16)
    w_o = torch.randn(hidden, hidden, device=dev, dtype=torch.bfloat16)
    w_up = torch.randn(hidden, 2 * inter, device=dev, dtype=torch.bfloat16)
    w_down = torch.randn(inter, hidden, device=dev, dtype=torch.bfloat16)

    def layer_compute(h: torch.Tensor) -> torch.Tensor:
        h = h @ w_qkv[:, :hidden] + (h @ w_o)
        u = h @ w_up
        return torch.nn.functional.silu(u[:, :inter]) * u[:, inter:] @ w_down

    cache = _bridge.worker.gpu_kv_cache(ctx, addresses, layout.paged_layout(), pinned, "mapped",
                                        "mapped")  # fmt: skip

    def forward(save: bool) -> None:
        h = x
        for layer in range(LAYERS):
            h = layer_compute(h)
            if save:
                cache.recordFence(stream)
                for i, c in enumerate(chunks_a):
                    cache.gatherLayer(layer, table_a, i * CHUNK, CHUNK, c)
        if save:
            cache.complete()

    plain = _median_seconds(lambda: forward(False), max(5, args.repeats // 2))
    saving = _median_seconds(lambda: forward(True), max(5, args.repeats // 2))
    out["forward_ms"] = plain * 1e3
    out["forward_with_layerwise_save_ms"] = saving * 1e3
    cache.close()

    for name in ("mapped", "dma"):
        out[f"{name}_store_ratio"] = out[f"kvtier_{name}_store_gbs"] / out["torch_store_gbs"]
        out[f"{name}_load_ratio"] = out[f"kvtier_{name}_load_gbs"] / out["torch_load_gbs"]
        one_way = max(out[f"kvtier_{name}_store_gbs"], out[f"kvtier_{name}_load_gbs"])
        out[f"{name}_both_over_one_way"] = out[f"kvtier_{name}_both_gbs"] / one_way
    out["layerwise_save_added_ms"] = (saving - plain) * 1e3
    print(f"GPU: {torch.cuda.get_device_name(dev)}; {tokens} tokens, {nbytes / 2**20:.0f} MiB")
    for k, v in out.items():
        print(f"  {k:34s} {v:10.3f}" if isinstance(v, float) else f"  {k:34s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    for c in chunks_a + chunks_b:
        pinned.free(c)
    ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
