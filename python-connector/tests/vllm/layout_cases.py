"""vLLM's KV cache layouts as torch tensors (shapes and strides as vLLM registers them), with how
each attention backend reads a token's K and V: shared by the layout tests on CPU and the GPU
tests."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
import torch

LAYERS, BLOCKS, HEADS, HEAD, LATENT = 3, 10, 4, 32, 576
DTYPES = [torch.bfloat16, torch.float16, torch.float8_e4m3fn]

Reader = Callable[[torch.Tensor, int, int, int], torch.Tensor]
"""(layer view, kv, block, slot) -> that token's K (kv=0) or V (kv=1), [heads, head]."""


def alloc(
    shape: tuple[int, ...], dtype: torch.dtype, seed: int | None, device: str = "cpu"
) -> torch.Tensor:
    """Random bytes (any bit pattern, as a cache holds) or zeros, on ``device``."""
    nbytes = int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
    if seed is None:
        raw = torch.zeros(nbytes, dtype=torch.uint8)
    else:
        g = torch.Generator().manual_seed(seed)
        raw = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=g)
    return raw.view(dtype).view(shape).to(device)


def split_kv(order: str) -> Callable[..., tuple[list[torch.Tensor], Reader]]:
    """vLLM 0.32's GPU backends: per layer a [B, H, N, 2D] view in a KVCacheLayout order."""
    physical = {
        "LBHNC": lambda n: (LAYERS, BLOCKS, HEADS, n, 2 * HEAD),  # HND
        "LBNHC": lambda n: (LAYERS, BLOCKS, n, HEADS, 2 * HEAD),  # NHD
        "BLHNC": lambda n: (BLOCKS, LAYERS, HEADS, n, 2 * HEAD),  # cross-layer, HND
        "BLNHC": lambda n: (BLOCKS, LAYERS, n, HEADS, 2 * HEAD),  # cross-layer, NHD
    }[order]

    def build(block: int, dtype: torch.dtype, seed: int | None, device: str = "cpu"):
        full = alloc(physical(block), dtype, seed, device)
        per_layer = [full[i] if order[0] == "L" else full[:, i] for i in range(LAYERS)]
        if order[2] == "N":  # [B, N, H, C] physically: the logical view swaps N and H
            per_layer = [v.permute(0, 2, 1, 3) for v in per_layer]

        def read(v: torch.Tensor, kv: int, b: int, n: int) -> torch.Tensor:
            key, value = v.transpose(1, 2).split(HEAD, dim=-1)  # as FlashAttention reads it
            return (key if kv == 0 else value)[b, n]

        return per_layer, read

    return build


def flash_attn(hnd: bool) -> Callable[..., tuple[list[torch.Tensor], Reader]]:
    """Earlier vLLM: [2, B, N, H, D]; HND is a permuted view of [2, B, H, N, D]."""

    def build(block: int, dtype: torch.dtype, seed: int | None, device: str = "cpu"):
        views = []
        for i in range(LAYERS):
            s = None if seed is None else seed + i
            if hnd:
                hnd_view = alloc((2, BLOCKS, HEADS, block, HEAD), dtype, s, device)
                views.append(hnd_view.transpose(2, 3))
            else:
                views.append(alloc((2, BLOCKS, block, HEADS, HEAD), dtype, s, device))
        return views, lambda v, kv, b, n: v[kv, b, n]

    return build


def flashinfer(block: int, dtype: torch.dtype, seed: int | None, device: str = "cpu"):
    views = [
        alloc((BLOCKS, 2, block, HEADS, HEAD), dtype, None if seed is None else seed + i, device)
        for i in range(LAYERS)
    ]
    return views, lambda v, kv, b, n: v[b, kv, n]


def mla(block: int, dtype: torch.dtype, seed: int | None, device: str = "cpu"):
    views = [
        alloc((BLOCKS, block, LATENT), dtype, None if seed is None else seed + i, device)
        for i in range(LAYERS)
    ]
    return views, lambda v, kv, b, n: v[b, n].unsqueeze(0)


ORDERS = ("LBHNC", "LBNHC", "BLHNC", "BLNHC")
CASES = [pytest.param(split_kv(o), "split-kv", id=f"split-kv-{o}") for o in ORDERS] + [
    pytest.param(flash_attn(False), "flash-attn", id="flash-attn-NHD"),
    pytest.param(flash_attn(True), "flash-attn", id="flash-attn-HND"),
    pytest.param(flashinfer, "flashinfer", id="flashinfer"),
    pytest.param(mla, "mla", id="mla"),
]


def as_bytes(t: torch.Tensor) -> np.ndarray:
    """The bytes of ``t`` in logical order, in host memory."""
    return t.contiguous().view(torch.uint8).cpu().numpy().reshape(-1)


def vllm_config(engine_id: str, block_size: int, heads: int, head: int) -> SimpleNamespace:
    """The parts of vLLM's config the worker side reads, for a tiny model with one rank."""
    model = SimpleNamespace(
        model="test/tiny",
        get_num_kv_heads=lambda parallel: heads,
        get_head_size=lambda: head,
    )
    return SimpleNamespace(
        model_config=model,
        cache_config=SimpleNamespace(block_size=block_size),
        parallel_config=SimpleNamespace(tensor_parallel_size=1, world_size=1),
        kv_transfer_config=SimpleNamespace(engine_id=engine_id),
    )


def gpu_unavailable() -> str | None:
    """Why the GPU tests cannot run here (None: they can)."""
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    from kvtier import _jvm

    probe = _jvm.java_class("io.kvtier.cuda.CudaProbe").availability()
    return None if probe.available() else f"kvtier cannot use CUDA: {probe.reason()}"
