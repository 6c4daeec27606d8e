"""Layout detection against torch tensors in the shapes and strides vLLM registers, GPU layouts
included (built in host memory here, with the strides they have on a GPU).

For each layout, ``describe`` yields the ``PagedLayout`` the Java copy paths use (the CPU copier
here; the CUDA kernels take the same strides). A chunk gathered through it must hold exactly the K
and V vectors read from the tensors the way the attention backend reads them, and scattering the
chunk into empty tensors must put exactly those vectors back. Byte for byte, for bf16, fp16 and
fp8, block sizes 16, 32 and 64, NHD, HND and cross-layer orders, FlashInfer and MLA.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (it comes with vLLM)")

from kvtier import _jvm  # noqa: E402
from kvtier.vllm.layouts import describe  # noqa: E402

LAYERS, BLOCKS, HEADS, HEAD, LATENT = 3, 10, 4, 32, 576
DTYPES = [torch.bfloat16, torch.float16, torch.float8_e4m3fn]

Reader = Callable[[torch.Tensor, int, int, int], torch.Tensor]
"""(layer view, kv, block, slot) -> that token's K (kv=0) or V (kv=1), [heads, head]."""


def _alloc(shape: tuple[int, ...], dtype: torch.dtype, seed: int | None) -> torch.Tensor:
    """Random bytes (any bit pattern, as a cache holds) or zeros."""
    nbytes = int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
    if seed is None:
        raw = torch.zeros(nbytes, dtype=torch.uint8)
    else:
        g = torch.Generator().manual_seed(seed)
        raw = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=g)
    return raw.view(dtype).view(shape)


def split_kv(order: str) -> Callable[..., tuple[list[torch.Tensor], Reader]]:
    """vLLM 0.32's GPU backends: per layer a [B, H, N, 2D] view in a KVCacheLayout order."""
    physical = {
        "LBHNC": lambda n: (LAYERS, BLOCKS, HEADS, n, 2 * HEAD),  # HND
        "LBNHC": lambda n: (LAYERS, BLOCKS, n, HEADS, 2 * HEAD),  # NHD
        "BLHNC": lambda n: (BLOCKS, LAYERS, HEADS, n, 2 * HEAD),  # cross-layer, HND
        "BLNHC": lambda n: (BLOCKS, LAYERS, n, HEADS, 2 * HEAD),  # cross-layer, NHD
    }[order]

    def build(block: int, dtype: torch.dtype, seed: int | None):
        full = _alloc(physical(block), dtype, seed)
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

    def build(block: int, dtype: torch.dtype, seed: int | None):
        views = []
        for i in range(LAYERS):
            s = None if seed is None else seed + i
            if hnd:
                views.append(_alloc((2, BLOCKS, HEADS, block, HEAD), dtype, s).transpose(2, 3))
            else:
                views.append(_alloc((2, BLOCKS, block, HEADS, HEAD), dtype, s))
        return views, lambda v, kv, b, n: v[kv, b, n]

    return build


def flashinfer(block: int, dtype: torch.dtype, seed: int | None):
    views = [
        _alloc((BLOCKS, 2, block, HEADS, HEAD), dtype, None if seed is None else seed + i)
        for i in range(LAYERS)
    ]
    return views, lambda v, kv, b, n: v[b, kv, n]


def mla(block: int, dtype: torch.dtype, seed: int | None):
    views = [
        _alloc((BLOCKS, block, LATENT), dtype, None if seed is None else seed + i)
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


def _bytes(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().view(torch.uint8).numpy().reshape(-1)


def _cache(views: list[torch.Tensor], paged) -> object:
    addresses = _jvm.long_array(np.array([v.data_ptr() for v in views], dtype=np.int64))
    return _jvm.java_class("io.kvtier.transfer.PagedKvCache").ofAddresses(addresses, paged, 1)


@pytest.mark.parametrize("block", [16, 32, 64])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize(("build", "kind"), CASES)
def test_gather_and_scatter_through_the_described_layout(build, kind, dtype, block) -> None:
    views, read = build(block, dtype, 7)
    is_mla = kind == "mla"
    layout = describe(
        {f"model.layers.{i}.attn": v for i, v in enumerate(views)},
        block_size=block, num_heads=HEADS, head_size=LATENT if is_mla else HEAD, mla=is_mla,
        gpu_backend=True,
    )  # fmt: skip
    assert layout.kind == kind
    paged = layout.paged_layout()
    kv_count = 1 if is_mla else 2
    tokens = block + block // 2 + 3  # one whole block, then part of the next
    table = [7, 2, 9]
    blocks = _jvm.int_array(np.array(table, dtype=np.int32))
    view = _jvm.java_class("io.kvtier.bridge.HostMemory").view

    cache = _cache(views, paged)
    chunk = np.zeros(tokens * int(cache.tokenBytes()), dtype=np.uint8)
    cache.gather(blocks, 0, tokens, view(chunk.ctypes.data, chunk.nbytes))

    # The chunk as PagedLayout documents it, from the backend's own reading of the tensors.
    expected = []
    for v in views:
        for kv in range(kv_count):
            rows = torch.stack([read(v, kv, table[t // block], t % block) for t in range(tokens)])
            if paged.headMajorChunk():
                rows = rows.transpose(0, 1)  # [head][token][d]
            expected.append(_bytes(rows))
    assert np.array_equal(chunk, np.concatenate(expected))

    targets, _ = build(block, dtype, None)
    _cache(targets, paged).scatter(
        view(chunk.ctypes.data, chunk.nbytes), tokens, blocks, 0, 0, tokens
    )
    touched = 0
    for v, t in zip(views, targets, strict=True):
        for tok in range(tokens):
            for kv in range(kv_count):
                got = _bytes(read(t, kv, table[tok // block], tok % block))
                assert np.array_equal(got, _bytes(read(v, kv, table[tok // block], tok % block)))
                touched += got.size
    # nothing outside the loaded tokens was written
    total = sum(int(_bytes(t).astype(bool).sum()) for t in targets)
    assert total <= touched


def test_layers_with_different_strides_or_unknown_shapes_are_refused() -> None:
    views, _ = split_kv("LBHNC")(16, torch.bfloat16, 1)
    other = views[1].permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)  # same shape, NHD
    with pytest.raises(ValueError, match="differ between layers"):
        describe({"a": views[0], "b": other}, block_size=16, num_heads=HEADS, head_size=HEAD)
    with pytest.raises(ValueError, match=r"unknown KV cache layout .*strides \(.*, 2\)"):
        describe({"a": views[0][..., ::2]}, block_size=16, num_heads=HEADS, head_size=HEAD // 2)
    with pytest.raises(ValueError, match=r"MLA's \[num_blocks, block_size, head_size\]"):
        describe({"a": views[0]}, block_size=16, num_heads=HEADS, head_size=HEAD, mla=True)
