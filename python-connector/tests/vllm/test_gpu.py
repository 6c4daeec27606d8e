"""The CUDA data path on a GPU: ``GpuKvCache``'s kernels against torch-made KV caches in vLLM's
exact shapes, byte for byte, in both copy modes; random slot mappings; copies running while torch
kernels write other blocks. Skipped, with the reason, where there is no usable GPU.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (it comes with vLLM)")

from layout_cases import (  # noqa: E402
    BLOCKS,
    CASES,
    DTYPES,
    HEAD,
    HEADS,
    LATENT,
    as_bytes,
    gpu_unavailable,
)

from kvtier import _jvm  # noqa: E402
from kvtier.vllm.layouts import describe  # noqa: E402

pytestmark = [pytest.mark.gpu]
if (_REASON := gpu_unavailable()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_REASON))

CUDA = "io.kvtier.cuda."


@pytest.fixture(scope="module")
def cuda():
    torch.cuda.init()
    ctx = _jvm.java_class(CUDA + "CudaContext").primary(torch.cuda.current_device())
    pinned = _jvm.new(CUDA + "PinnedHostAllocator", ctx).java
    yield ctx, pinned
    ctx.close()


def _gpu_cache(cuda, views, layout, save_mode: str, load_mode: str):
    ctx, pinned = cuda
    mode = _jvm.java_class(CUDA + "GpuKvCache$Mode")
    addresses = _jvm.long_array(np.array([v.data_ptr() for v in views], dtype=np.int64))
    return _jvm.new(
        CUDA + "GpuKvCache", ctx, addresses, layout.paged_layout(), pinned,
        mode.parse(save_mode), mode.parse(load_mode),
    )  # fmt: skip


def _host(segment) -> np.ndarray:
    """A numpy view of a pinned chunk (a Java MemorySegment)."""
    import ctypes

    size = int(segment.byteSize())
    buf = (ctypes.c_uint8 * size).from_address(int(segment.address()))
    return np.frombuffer(buf, dtype=np.uint8)


@pytest.mark.parametrize("modes", [("mapped", "mapped"), ("dma", "dma")], ids=lambda m: m[0])
@pytest.mark.parametrize("block", [16, 32, 64])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize(("build", "kind"), CASES)
def test_round_trip_is_byte_exact(cuda, build, kind, dtype, block, modes) -> None:
    views, read = build(block, dtype, 11, "cuda")
    is_mla = kind == "mla"
    layout = describe(
        {f"l{i}": v for i, v in enumerate(views)},
        block_size=block, num_heads=HEADS, head_size=LATENT if is_mla else HEAD, mla=is_mla,
    )  # fmt: skip
    assert layout.kind == kind
    cache = _gpu_cache(cuda, views, layout, *modes)
    rng = random.Random(block)
    table = rng.sample(range(BLOCKS), 3)  # a random slot mapping, as vLLM's allocator gives
    tokens = 2 * block + 5
    blocks = _jvm.int_array(np.array(table, dtype=np.int32))
    chunk = cuda[1].allocate(tokens * int(cache.tokenBytes()))
    torch.cuda.synchronize()
    cache.recordFence(int(torch.cuda.current_stream().cuda_stream))
    cache.gather(blocks, 0, tokens, chunk)
    cache.complete()
    host = _host(chunk).copy()
    # The same bytes as the CPU path gathers from a host copy of the tensors.
    cpu_views = [v.cpu() for v in views]
    expected = np.zeros_like(host)
    cpu = _jvm.java_class("io.kvtier.transfer.PagedKvCache").ofAddresses(
        _jvm.long_array(np.array([v.data_ptr() for v in cpu_views], dtype=np.int64)),
        describe({f"l{i}": v for i, v in enumerate(cpu_views)}, block_size=block,
                 num_heads=HEADS, head_size=LATENT if is_mla else HEAD, mla=is_mla,
                 gpu_backend=True).paged_layout(), 1,
    )  # fmt: skip
    view = _jvm.java_class("io.kvtier.memory.HostMemory").view
    cpu.gather(blocks, 0, tokens, view(expected.ctypes.data, expected.nbytes))
    assert np.array_equal(host, expected)

    # Load part of the chunk (rows 3..) into other blocks of zeroed tensors.
    targets, _ = build(block, dtype, None, "cuda")
    loaded = _gpu_cache(cuda, targets, layout, *modes)
    other = _jvm.int_array(np.array(rng.sample(range(BLOCKS), 3), dtype=np.int32))
    loaded.scatter(chunk, tokens, other, 0, 3, tokens - 3)
    loaded.orderBeforeCompute(int(torch.cuda.current_stream().cuda_stream))
    loaded.complete()
    torch.cuda.synchronize()
    for v, t in zip(views, targets, strict=True):
        for tok in range(3, tokens):
            src = (table[tok // block], tok % block)
            dst = (int(other[tok // block]), tok % block)
            for kv in range(1 if is_mla else 2):
                assert np.array_equal(as_bytes(read(t, kv, *dst)), as_bytes(read(v, kv, *src)))
    loaded.close()
    cache.close()
    cuda[1].free(chunk)


def test_copies_run_while_kernels_write_other_blocks(cuda) -> None:
    """Saves and loads on kvtier's streams while torch keeps rewriting blocks they do not touch:
    the saved bytes are the fenced ones, and the blocks torch writes keep torch's values."""
    from layout_cases import split_kv

    block, tokens = 16, 64
    views, _ = split_kv("LBNHC")(block, torch.bfloat16, 3, "cuda")
    layout = describe({f"l{i}": v for i, v in enumerate(views)}, block_size=block,
                      num_heads=HEADS, head_size=HEAD)  # fmt: skip
    cache = _gpu_cache(cuda, views, layout, "mapped", "dma")
    ours = [0, 1, 2, 3]
    busy = [6, 7, 8, 9]
    blocks = _jvm.int_array(np.array(ours, dtype=np.int32))
    before = [as_bytes(v[ours]) for v in views]
    side = torch.cuda.Stream()
    chunk = cuda[1].allocate(tokens * int(cache.tokenBytes()))
    for round_ in range(20):
        with torch.cuda.stream(side):
            for v in views:
                v[busy] = float(round_)
        cache.recordFence(int(side.cuda_stream))
        cache.gather(blocks, 0, tokens, chunk)
        cache.scatter(chunk, tokens, blocks, 0, 0, tokens)  # writes back the same bytes
        cache.orderBeforeCompute(int(side.cuda_stream))
        cache.complete()
    torch.cuda.synchronize()
    for v, b in zip(views, before, strict=True):
        assert np.array_equal(as_bytes(v[ours]), b)
        assert torch.all(v[busy].float() == 19.0)
    cache.close()
    cuda[1].free(chunk)


@pytest.mark.parametrize("modes", [("mapped", "mapped"), ("dma", "dma")], ids=lambda m: m[0])
def test_part_of_some_layers_moves_as_on_the_host(cuda, modes) -> None:
    """A hybrid model's group (``KvCacheTransfer.moveLayers``, as ``KvWorker`` moves a sliding
    window's rows): layers 0 and 2 of three, rows from 20 on of a 48-row chunk. The gather leaves
    the other rows and layer 1 as the host left them (zeros, through the staging buffer too) and
    writes the same bytes as the CPU path; the scatter puts those rows into other blocks and
    nothing else."""
    from layout_cases import split_kv

    block, tokens, skip = 16, 48, 20
    views, read = split_kv("LBHNC")(block, torch.bfloat16, 5, "cuda")
    layout = describe({f"l{i}": v for i, v in enumerate(views)}, block_size=block,
                      num_heads=HEADS, head_size=HEAD)  # fmt: skip
    cache = _gpu_cache(cuda, views, layout, *modes)
    layers = _jvm.int_array(np.array([0, 2], dtype=np.int32))
    table = [5, 2, 9]
    blocks = _jvm.int_array(np.array(table, dtype=np.int32))
    chunk = cuda[1].allocate(tokens * int(cache.tokenBytes()))
    _host(chunk)[:] = 0
    torch.cuda.synchronize()
    cache.recordFence(int(torch.cuda.current_stream().cuda_stream))
    cache.moveLayers(False, layers, chunk, tokens, blocks, 0, skip, tokens - skip)
    cache.complete()
    got = _host(chunk).copy()
    cpu_views = [v.cpu() for v in views]
    expected = np.zeros_like(got)
    cpu = _jvm.java_class("io.kvtier.transfer.PagedKvCache").ofAddresses(
        _jvm.long_array(np.array([v.data_ptr() for v in cpu_views], dtype=np.int64)),
        describe({f"l{i}": v for i, v in enumerate(cpu_views)}, block_size=block,
                 num_heads=HEADS, head_size=HEAD, gpu_backend=True).paged_layout(), 1,
    )  # fmt: skip
    view = _jvm.java_class("io.kvtier.memory.HostMemory").view
    cpu.moveLayers(False, layers, view(expected.ctypes.data, expected.nbytes), tokens, blocks,
                   0, skip, tokens - skip)  # fmt: skip
    assert np.array_equal(got, expected)
    layer_bytes = len(expected) // 3
    assert not expected[layer_bytes : 2 * layer_bytes].any(), "layer 1 was not moved"
    assert expected[2 * layer_bytes :].any()

    targets, _ = split_kv("LBHNC")(block, torch.bfloat16, None, "cuda")
    loaded = _gpu_cache(cuda, targets, layout, *modes)
    other = [7, 1, 4]
    other_blocks = _jvm.int_array(np.array(other, dtype=np.int32))
    loaded.moveLayers(True, layers, chunk, tokens, other_blocks, 0, skip, tokens - skip)
    loaded.orderBeforeCompute(int(torch.cuda.current_stream().cuda_stream))
    loaded.complete()
    torch.cuda.synchronize()
    for i, (v, t) in enumerate(zip(views, targets, strict=True)):
        for tok in range(tokens):
            dst = (other[tok // block], tok % block)
            for kv in range(2):
                if i != 1 and tok >= skip:
                    src = (table[tok // block], tok % block)
                    assert np.array_equal(as_bytes(read(t, kv, *dst)), as_bytes(read(v, kv, *src)))
                else:
                    assert not as_bytes(read(t, kv, *dst)).any(), (i, tok)
    loaded.close()
    cache.close()
    cuda[1].free(chunk)
