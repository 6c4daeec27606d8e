"""The Java engine seen from Python: one object per process and layout, coarse calls only.

:class:`Engine` wraps the Java ``KvEngine`` (opened through :mod:`kvtier._bridge`). Token ids go
over as one ``int[]`` per call (numpy int32 arrays convert in bulk), chunk data by host address;
nothing is called per block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kvtier import _bridge, _jvm
from kvtier.hostmem import buffer_address


@dataclass(frozen=True)
class Layout:
    """What makes stored bytes interchangeable (the key namespace), and bytes per token.

    ``bytes_per_token`` is what one token's KV occupies in a chunk: all layers, K and V (MLA: the
    latent only).
    """

    model_id: str
    kv_dtype: str
    num_layers: int
    kv_heads_per_rank: int
    head_size: int
    bytes_per_token: int
    tp_size: int = 1
    tp_rank: int = 0
    mla: bool = False
    chunk_order: str = "token-major"
    """``token-major`` (NHD-style caches, MLA) or ``head-major`` (HND-style, vLLM's CPU backend)."""
    first_layer: int = 0
    """The model's index of the first layer stored (a pipeline-parallel stage's first layer)."""
    kv_groups: str = ""
    """The model's KV cache groups as the core's ``CacheGroups.describe()`` names them: empty for
    one group of full-attention layers."""
    writes_remote: bool = True
    """False: the remote store is read, never written (MLA ranks but the first: every rank holds
    the same KV, so one copy is sent)."""


def _tokens(tokens: Sequence[int] | np.ndarray) -> tuple[Any, int]:
    arr = np.ascontiguousarray(tokens, dtype=np.int32)
    return _jvm.int_array(arr), int(arr.shape[0])


def _addresses(buffers: Sequence[Any], writable: bool) -> Any:
    addrs = np.fromiter(
        (buffer_address(b, writable=writable)[0] for b in buffers),
        dtype=np.int64,
        count=len(buffers),
    )
    return _jvm.long_array(addrs)


def key_extras(words: np.ndarray | None) -> Any:
    """Key extras (:func:`kvtier.keys.words`) as a Java ``KeyExtras``; None: a plain prompt."""
    return _bridge.worker.key_extras(words)


class Engine:
    """A kvtier engine: lookups, stores and loads of prompts' chunks. Thread-safe.

    Configuration comes from ``KVTIER_CONFIG_FILE``, ``KVTIER_<KEY>`` variables and ``settings``
    (highest priority), with the chunk size taken from ``settings``/the environment. The CPU tier's
    slabs come from ``allocator`` (a Java ``HostAllocator``; default: anonymous
    mappings; the vLLM worker passes pinned CUDA memory when the KV cache is on a GPU).

    Raises:
        kvtier.JavaValueError: a bad setting or layout (the message names the key and value).
        kvtier.JvmError: the JVM cannot start.
    """

    def __init__(
        self,
        layout: Layout,
        settings: Mapping[str, Any] | None = None,
        allocator: Any = None,
    ) -> None:
        bridge = _bridge.worker
        config = bridge.load_config(settings or {})
        chunk = int(config.chunkTokens())
        ns = bridge.key_namespace(
            {
                "model_id": layout.model_id,
                "kv_dtype": layout.kv_dtype,
                "num_layers": layout.num_layers,
                "kv_heads_per_rank": layout.kv_heads_per_rank,
                "head_size": layout.head_size,
                "tp_size": layout.tp_size,
                "tp_rank": layout.tp_rank,
                "chunk_tokens": chunk,
                "mla": layout.mla,
                "chunk_order": layout.chunk_order,
                "first_layer": layout.first_layer,
                "kv_groups": layout.kv_groups,
            }
        )
        if allocator is None:
            allocator = bridge.mmap_allocator()
        self._engine = bridge.open_engine(
            config, ns, layout.bytes_per_token, allocator, layout.writes_remote
        )
        self.layout = layout
        self.chunk_tokens = chunk
        self.chunk_bytes = int(self._engine.chunkBytes())
        self._stat_names = bridge.engine_stat_names()

    @property
    def java(self) -> Any:
        """The raw Java ``KvEngine`` behind this object, for passing to Java."""
        return self._engine.java

    def lookup(self, tokens: Sequence[int] | np.ndarray) -> int:
        """Leading tokens of the prompt that are stored (chunk-aligned). Non-blocking."""
        jt, n = _tokens(tokens)
        return int(self._engine.lookup(jt, n))

    def lookup_and_pin(self, request_id: int, tokens: Sequence[int] | np.ndarray) -> int:
        """Like :meth:`lookup`, pinning what it reports until :meth:`unpin` of ``request_id``."""
        jt, n = _tokens(tokens)
        return int(self._engine.lookupAndPin(request_id, jt, n))

    def lookup_and_pin_tiers(
        self,
        request_id: int,
        tokens: Sequence[int] | np.ndarray,
        extras: np.ndarray | None = None,
    ) -> tuple[int, int, bool, bool, int]:
        """Like :meth:`lookup_and_pin`, also telling how much of the hit is in CPU memory,
        whether the chunk after it is being stored right now, whether a remote store's answer
        is still pending (the hit then counts local chunks only; ask again later — the call never
        waits on the network), and how much of the hit is in this process's tiers (CPU or disk;
        the rest is remote): ``(hit tokens, in memory, storing, pending, local)``.
        ``extras`` are the prompt's key extras (:func:`kvtier.keys.words`; None: a plain
        prompt)."""
        jt, n = _tokens(tokens)
        hit = self._engine.lookupAndPinTiers(request_id, jt, n, key_extras(extras))
        return int(hit[0]), int(hit[1]), bool(hit[2]), bool(hit[3]), int(hit[4])

    def clear_local(self) -> int:
        """Empties the CPU and disk tiers (a cache reset); returns chunks removed."""
        return int(self._engine.clearLocal())

    def unpin(self, request_id: int) -> None:
        """Drops the pins of ``request_id``. Idempotent."""
        self._engine.unpinRequest(request_id)

    def store(self, tokens: Sequence[int] | np.ndarray, chunks: Sequence[Any]) -> int:
        """Stores one host buffer per chunk of the prompt; returns chunks newly stored."""
        jt, n = _tokens(tokens)
        return int(self._engine.store(jt, n, _addresses(chunks, writable=False)))

    def retrieve(self, tokens: Sequence[int] | np.ndarray, out: Sequence[Any]) -> int:
        """Copies the stored leading chunks into ``out`` (one writable host buffer per chunk);
        returns how many were copied."""
        jt, n = _tokens(tokens)
        return int(self._engine.retrieve(jt, n, _addresses(out, writable=True)))

    def prefetch(self, tokens: Sequence[int] | np.ndarray) -> int:
        """Starts bringing disk-only chunks of the prompt into CPU memory; returns how many."""
        jt, n = _tokens(tokens)
        return int(self._engine.prefetch(jt, n))

    def stats(self) -> dict[str, int]:
        """Counters by name (lookup/hit tokens, puts, evictions, disk figures, ...)."""
        return dict(zip(self._stat_names, (int(v) for v in self._engine.stats()), strict=True))

    def close(self) -> None:
        """Releases every chunk and stops background work. Idempotent."""
        self._engine.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
