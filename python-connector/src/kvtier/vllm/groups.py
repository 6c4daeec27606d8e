"""Which of vLLM's KV cache groups kvtier serves, and how (both sides read them at start).

vLLM describes a model's KV cache as groups of layers, each with one spec and its own block table;
with its hybrid KV cache manager (HMA, which kvtier supports) a model mixing layer kinds has one
group per kind (or several of one kind), whose layers view the same memory, each group's blocks
allocated from one pool. kvtier serves groups of these kinds, in any number:

- **full attention** (``FullAttentionSpec``, ``MLAAttentionSpec``): every block of a request stays
  allocated until it finishes.
- **sliding window** (``SlidingWindowSpec``, ``SlidingWindowMLASpec``; Mistral 7B v0.1 slides in
  every layer, Gemma 3 and gpt-oss in some): vLLM frees a request's blocks that slid out of the
  window while the request runs, without telling connectors, and hands them to other requests.
  kvtier then copies a step's saves within the step (not on its transfer threads after it) and
  only from the window before each chunk's end (the rest of the group's rows are zeros); hits are
  whole chunks; loads write only the blocks vLLM allocated for the window (it puts its null block
  where a window no longer reaches). The worker also stops reading the blocks the scheduler knows
  vLLM freed (``RequestOp.computed``).

A chunk holds every layer of every group for its tokens, keyed in a namespace that names the groups
(``CacheGroups.describe`` in the core): a hit is one length for all groups, the largest every group
can serve.

Any other kind is refused when the connector starts, naming every group: Mamba, linear-attention
and short-convolution state (``MambaSpec``: a recurrent state per request, which vLLM's own prefix
cache keeps only at block boundaries in its ``align`` mode; kvtier stores token ranges, and loading
them would not restore the state, so serving such a model could resume from a state that does not
belong to the prompt), chunked local attention, encoder or cross attention, and groups whose block
sizes differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvtier.errors import ConfigError

FULL = "full attention"
SLIDING = "sliding window"


@dataclass(frozen=True)
class Group:
    """One of vLLM's KV cache groups."""

    kind: str
    """:data:`FULL` or :data:`SLIDING`."""
    window: int | None = None
    """The sliding window in tokens (the widest, where layers differ); None for full attention."""
    layers: tuple[str, ...] = ()
    """vLLM's names of the group's layers (empty where vLLM gave no ``KVCacheConfig``)."""


@dataclass(frozen=True)
class KvGroups:
    """What the model's KV cache groups mean for kvtier."""

    groups: tuple[Group, ...] = (Group(FULL),)

    @property
    def sliding(self) -> bool:
        """Whether some group attends to a sliding window."""
        return any(g.kind == SLIDING for g in self.groups)

    @property
    def count(self) -> int:
        return len(self.groups)

    def windows(self) -> list[int]:
        """Each group's window, 0 for full attention (the core's ``CacheGroups``)."""
        return [g.window or 0 for g in self.groups]

    def sliding_windows(self) -> list[tuple[int, int]]:
        """(group index, window) of each sliding group."""
        return [(i, g.window) for i, g in enumerate(self.groups) if g.window]

    def layer_groups(self, names: list[str], shared: dict[str, str] | None = None) -> list[int]:
        """The group of each of ``names`` (the registered KV tensors' layers, in order). A layer
        that reuses another layer's KV cache (vLLM's KV sharing, ``shared``: layer -> the layer
        whose cache it reads) is in no group; it takes its target's.

        Raises:
            kvtier.ConfigError: with several groups, a layer is in none (and shares no grouped
                layer's cache), or a group's layer has no tensor.
        """
        if len(self.groups) == 1:
            return [0] * len(names)
        index = {layer: g for g, group in enumerate(self.groups) for layer in group.layers}
        shared = shared or {}
        found = {n: index.get(n, index.get(shared.get(n, ""))) for n in names}
        missing = [n for n, g in found.items() if g is None]
        extra = sorted(set(index) - set(names))
        if missing or extra:
            raise ConfigError(
                f"kvtier: vLLM registered KV tensors of layers {missing or 'none'} outside its KV "
                f"cache groups, whose layers {extra or 'none'} have no tensor; kvtier cannot tell "
                "which blocks are whose. Start vLLM without kvtier for this model."
            )
        return [found[n] for n in names]  # type: ignore[misc]


FULL_ATTENTION = KvGroups()
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
    sizes = {int(getattr(g.kv_cache_spec, "block_size", 0)) for g in groups}
    served = all(kind in (FULL, SLIDING) for kind, _ in kinds)
    if served and len(sizes) == 1:
        return KvGroups(
            tuple(
                Group(kind, window, tuple(getattr(g, "layer_names", ()) or ()))
                for g, (kind, window) in zip(groups, kinds, strict=True)
            )
        )
    described = "; ".join(
        _describe(i, g, kind, shapes)
        for i, (g, (kind, _)) in enumerate(zip(groups, kinds, strict=True))
    )
    why = (
        f"their block sizes differ ({', '.join(str(s) for s in sorted(sizes))} tokens)"
        if served
        else "kvtier serves full-attention and sliding-window groups; Mamba, linear-attention and "
        "short-convolution state, chunked local attention and encoder or cross attention are "
        "not served"
    )
    raise ConfigError(
        f"kvtier cannot serve this model's KV cache groups: {described}: {why}. "
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
            return names.pop(), max(windows) if windows else None
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
