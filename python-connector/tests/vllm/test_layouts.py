"""Layout detection against torch tensors in the shapes and strides vLLM registers, GPU layouts
included (built in host memory here, with the strides they have on a GPU).

For each layout, ``describe`` yields the ``PagedLayout`` the Java copy paths use (the CPU copier
here; the CUDA kernels take the same strides). A chunk gathered through it must hold exactly the K
and V vectors read from the tensors the way the attention backend reads them, and scattering the
chunk into empty tensors must put exactly those vectors back. Byte for byte, for bf16, fp16 and
fp8, block sizes 16, 32 and 64, NHD, HND and cross-layer orders, FlashInfer and MLA.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (it comes with vLLM)")

from layout_cases import CASES, DTYPES, HEAD, HEADS, LATENT, as_bytes, split_kv  # noqa: E402

from kvtier import _jvm  # noqa: E402
from kvtier.vllm.layouts import describe  # noqa: E402


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
    view = _jvm.java_class("io.kvtier.memory.HostMemory").view

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
            expected.append(as_bytes(rows))
    assert np.array_equal(chunk, np.concatenate(expected))

    targets, _ = build(block, dtype, None)
    _cache(targets, paged).scatter(
        view(chunk.ctypes.data, chunk.nbytes), tokens, blocks, 0, 0, tokens
    )
    touched = 0
    for v, t in zip(views, targets, strict=True):
        for tok in range(tokens):
            for kv in range(kv_count):
                got = as_bytes(read(t, kv, table[tok // block], tok % block))
                assert np.array_equal(got, as_bytes(read(v, kv, table[tok // block], tok % block)))
                touched += got.size
    # nothing outside the loaded tokens was written
    total = sum(int(as_bytes(t).astype(bool).sum()) for t in targets)
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
