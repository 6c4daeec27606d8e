"""Recognises the paged KV cache tensors vLLM registers and describes them as strides.

Every layout kvtier moves is one Java ``PagedLayout``: element ``(kv, block, slot,
head, d)`` of a layer sits at ``kv * kv_stride + block * block_stride + slot * slot_stride + head *
head_stride + d``. The strides come from ``tensor.stride()``, so a layout's physical order (NHD or
HND, or one layer of a cross-layer tensor) needs no case of its own; only the logical shapes are
named here:

========================  =================================================  ===================
kind                      logical shape of one layer                         K and V
========================  =================================================  ===================
``cpu``                   ``[blocks, heads, block_size, 2 * head]`` (CPU)    K rows, then V rows
``split-kv``              ``[blocks, heads, block_size, 2 * head]`` (GPU)    ``d < head`` is K
``flash-attn``            ``[2, blocks, block_size, heads, head]``           dim 0
``flashinfer``            ``[blocks, 2, block_size, heads, head]``           dim 1
``mla``                   ``[blocks, block_size, head]``                     one latent vector
========================  =================================================  ===================

``split-kv`` is what vLLM 0.32's GPU backends (FlashAttention, FlashInfer, Triton) register: one
view per layer whose last dimension holds a token's K vector then its V vector, in whatever
physical order the backend's ``KVCacheLayout`` gives. ``flash-attn`` and ``flashinfer`` are the
five-dimensional layouts of earlier vLLM releases. The CPU backend reads the same four-dimensional
shape as ``[blocks, heads, 2 * block_size, head]``, hence its own kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

ELEMENT_BYTES = (1, 2, 4)
"""Element sizes kvtier moves: fp8 (e4m3, e5m2), bf16/fp16, fp32."""


@dataclass(frozen=True)
class KvCacheLayout:
    """The paged KV cache vLLM registered, as kvtier moves it (strides in elements)."""

    kind: str
    num_blocks: int
    block_size: int
    num_heads: int
    head_size: int
    element_bytes: int
    dtype: str
    device: str
    kv_count: int
    kv_stride: int
    block_stride: int
    slot_stride: int
    head_stride: int

    @property
    def mla(self) -> bool:
        return self.kind == "mla"

    def paged_layout(self) -> Any:
        """The Java ``PagedLayout`` of one layer (built and checked by the worker bridge)."""
        from kvtier import _bridge

        return _bridge.worker.paged_layout(
            {
                "num_blocks": self.num_blocks,
                "block_size": self.block_size,
                "kv_count": self.kv_count,
                "num_heads": self.num_heads,
                "head_size": self.head_size,
                "element_bytes": self.element_bytes,
                "kv_stride": self.kv_stride,
                "block_stride": self.block_stride,
                "slot_stride": self.slot_stride,
                "head_stride": self.head_stride,
            }
        )


def describe(
    kv_caches: Mapping[str, torch.Tensor],
    *,
    block_size: int,
    num_heads: int,
    head_size: int,
    mla: bool = False,
    gpu_backend: bool | None = None,
) -> KvCacheLayout:
    """Names the layout of ``kv_caches`` (one tensor per layer, in model order).

    ``num_heads`` is the KV heads of this rank and ``head_size`` the head (MLA: latent) size, as
    vLLM's model config gives them. ``gpu_backend`` says whose reading of the four-dimensional
    shape applies (default: a GPU backend's unless the tensors are in host memory).

    Raises:
        ValueError: the tensors are not alike, or in no layout kvtier moves; the message says what
            was seen and what kvtier moves.
    """
    if not kv_caches:
        raise ValueError("kvtier: vLLM registered no KV cache tensors")
    names = list(kv_caches)
    first = kv_caches[names[0]]
    seen = (
        f"shape {tuple(first.shape)}, strides {tuple(first.stride())}, dtype {first.dtype}, "
        f"device {first.device}"
    )
    for name in names[1:]:
        t = kv_caches[name]
        if (t.shape, t.stride(), t.dtype, t.device) != (
            first.shape, first.stride(), first.dtype, first.device,
        ):  # fmt: skip
            raise ValueError(
                f"kvtier: KV cache tensors differ between layers ({name}: shape {tuple(t.shape)}, "
                f"strides {tuple(t.stride())}, {t.dtype}, {t.device}; first layer: {seen}); "
                "kvtier needs one layout for every layer"
            )
    element = int(first.element_size())
    if element not in ELEMENT_BYTES or first.dtype.is_complex:
        raise ValueError(
            f"kvtier: KV cache dtype {first.dtype} is not moved (elements of 1, 2 or 4 bytes: "
            f"fp8, bf16, fp16, fp32); seen {seen}"
        )
    if gpu_backend is None:
        gpu_backend = first.device.type != "cpu"
    kind, geometry = _match(first, block_size, num_heads, head_size, mla, gpu_backend)
    if kind is None:
        expected = _expected(block_size, num_heads, head_size, mla)
        raise ValueError(f"kvtier: unknown KV cache layout ({seen}); {expected}")
    kv_count, blocks, kv_stride, block_stride, slot_stride, head_stride = geometry
    heads = 1 if kind == "mla" else num_heads
    reach = (
        (kv_count - 1) * kv_stride
        + (blocks - 1) * block_stride
        + (block_size - 1) * slot_stride
        + (heads - 1) * head_stride
        + head_size
    ) * element
    if first.device.type != "meta":
        available = first.untyped_storage().nbytes() - first.storage_offset() * element
        if reach > available:
            raise ValueError(
                f"kvtier: the {kind} layout of the KV cache ({seen}) reaches {reach} bytes past "
                f"its start, but its storage holds {available}"
            )
    if kind == "cpu" and not first.is_contiguous():
        raise ValueError(f"kvtier: the CPU KV cache tensor is not contiguous ({seen})")
    return KvCacheLayout(
        kind=kind,
        num_blocks=blocks,
        block_size=block_size,
        num_heads=heads,
        head_size=head_size,
        element_bytes=element,
        dtype=str(first.dtype).removeprefix("torch."),
        device=str(first.device),
        kv_count=kv_count,
        kv_stride=kv_stride,
        block_stride=block_stride,
        slot_stride=slot_stride,
        head_stride=head_stride,
    )


def _match(
    t: torch.Tensor, block_size: int, heads: int, head: int, mla: bool, gpu_backend: bool
) -> tuple[str | None, tuple[int, int, int, int, int, int]]:
    """(kind, (kv_count, blocks, kv, block, slot, head strides)), or (None, ...) if unknown."""
    shape, s = tuple(int(x) for x in t.shape), tuple(int(x) for x in t.stride())
    none: tuple[str | None, tuple[int, int, int, int, int, int]] = (None, (0, 0, 0, 0, 0, 0))
    if not shape or s[-1] != 1 or min(shape) <= 0:
        return none
    if mla:
        if len(shape) == 3 and shape[1:] == (block_size, head):
            return "mla", (1, shape[0], 0, s[0], s[1], head)
        return none
    if len(shape) == 4 and shape[1:] == (heads, block_size, 2 * head):
        if not gpu_backend:
            # vLLM's CPU backend: per block and head, block_size K rows then block_size V rows.
            return "cpu", (2, shape[0], block_size * head, s[0], head, s[1])
        return "split-kv", (2, shape[0], head, s[0], s[2], s[1])
    if len(shape) == 5 and shape[0] == 2 and shape[2:] == (block_size, heads, head):
        return "flash-attn", (2, shape[1], s[0], s[1], s[2], s[3])
    if len(shape) == 5 and shape[1] == 2 and shape[2:] == (block_size, heads, head):
        return "flashinfer", (2, shape[0], s[1], s[0], s[2], s[3])
    return none


def _expected(block_size: int, heads: int, head: int, mla: bool) -> str:
    if mla:
        return f"expected MLA's [num_blocks, block_size, head_size] = [n, {block_size}, {head}]"
    return (
        "expected, with the last dimension contiguous, "
        f"[num_blocks, {heads}, {block_size}, {2 * head}] (vLLM 0.32 on, CPU or GPU), "
        f"[2, num_blocks, {block_size}, {heads}, {head}] (FlashAttention) or "
        f"[num_blocks, 2, {block_size}, {heads}, {head}] (FlashInfer)"
    )
