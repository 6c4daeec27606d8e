"""Which of vLLM's KV cache groups kvtier serves, and how (both sides read them at start).

vLLM describes a model's KV cache as groups of layers, each with one spec. kvtier serves a model
whose layers form one group of one of these kinds:

- **full attention** (``FullAttentionSpec``, ``MLAAttentionSpec``): every block of a request stays
  allocated until it finishes. This includes a model that mixes sliding-window and full layers:
  kvtier does not implement vLLM's ``SupportsHMA``, so vLLM turns its hybrid KV cache manager off
  and merges such layers into one full-attention group that keeps every block.
- **sliding window** (``SlidingWindowSpec``, ``SlidingWindowMLASpec``: every layer slides, as in
  Mistral 7B v0.1): vLLM frees a request's blocks that slid out of the window while the request
  runs, without telling connectors, and hands them to other requests. kvtier then copies a
  step's saves within the step (not on its transfer threads after it), so no block is read after
  vLLM reused it; hits are whole chunks, whose window is always among what was saved; and loads
  skip the null blocks vLLM puts where a window no longer reaches.

Any other kind (Mamba and linear-attention state, chunked local attention, encoder or cross
attention, several groups) is refused when the connector starts, naming every group: serving it
as if it were full attention could load a state that does not belong to the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvtier.errors import ConfigError

FULL = "full attention"
SLIDING = "sliding window"


@dataclass(frozen=True)
class KvGroups:
    """What the model's KV cache groups mean for kvtier."""

    kind: str
    """:data:`FULL` or :data:`SLIDING`."""
    window: int | None = None
    """The sliding window in tokens (the smallest, where layers differ); None for full
    attention."""

    @property
    def sliding(self) -> bool:
        return self.kind == SLIDING


FULL_ATTENTION = KvGroups(FULL)
"""A model of full-attention layers, as every model was before vLLM had groups."""


def classify(kv_cache_config: Any, shapes: dict[str, tuple[int, ...]] | None = None) -> KvGroups:
    """The groups of ``kv_cache_config`` (vLLM's ``KVCacheConfig``; None where vLLM gives the
    connector none: full attention, as before groups existed).

    Raises:
        kvtier.ConfigError: groups kvtier does not serve, each named with its kind, its layers
            and (from ``shapes``, the registered tensors' shapes by layer) their shape.
    """
    groups = list(getattr(kv_cache_config, "kv_cache_groups", None) or ())
    if not groups:
        return FULL_ATTENTION
    kinds = [_kind(g.kv_cache_spec) for g in groups]
    if len(groups) == 1 and kinds[0][0] in (FULL, SLIDING):
        return KvGroups(*kinds[0])
    described = "; ".join(
        _describe(i, g, kind, shapes)
        for i, (g, (kind, _)) in enumerate(zip(groups, kinds, strict=True))
    )
    raise ConfigError(
        f"kvtier cannot serve this model's KV cache groups: {described}. kvtier serves one group "
        "of full-attention or sliding-window layers (a model mixing the two runs with vLLM's "
        "hybrid KV cache manager off, which vLLM does when kvtier is configured); Mamba or "
        "linear-attention state, chunked local attention and several groups are not served yet. "
        "Start vLLM without kvtier for this model."
    )


def _kind(spec: Any) -> tuple[str, int | None]:
    """(kind, window) of one group's spec; an unknown spec keeps its class name as its kind."""
    from vllm.v1 import kv_cache_interface as kv

    inner = getattr(spec, "kv_cache_specs", None)
    if type(spec).__name__ == "UniformTypeKVCacheSpecs" and inner:
        kinds = {_kind(s) for s in inner.values()}
        names = {k for k, _ in kinds}
        if len(names) == 1:
            windows = [w for _, w in kinds if w is not None]
            return names.pop(), min(windows) if windows else None
        return "mixed " + " and ".join(sorted(names)), None
    if type(spec) in (kv.FullAttentionSpec, kv.MLAAttentionSpec):
        return FULL, None
    if type(spec) in (kv.SlidingWindowSpec, kv.SlidingWindowMLASpec):
        return SLIDING, int(spec.sliding_window)
    return type(spec).__name__, None


def _describe(index: int, group: Any, kind: str, shapes: dict[str, tuple[int, ...]] | None) -> str:
    layers = list(getattr(group, "layer_names", ()) or ())
    shown = ", ".join(layers[:3]) + (f" and {len(layers) - 3} more" if len(layers) > 3 else "")
    shape = ""
    if shapes and layers and layers[0] in shapes:
        shape = f", tensors of shape {tuple(shapes[layers[0]])}"
    return f"group {index}: {kind} ({len(layers)} layers: {shown}{shape})"
