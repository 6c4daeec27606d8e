"""kvtier's KV events: which prompt blocks kvtier's CPU and disk tiers hold, published through
vLLM's own KV event publisher (``--kv-events-config``), so a KV-aware router sees them beside
vLLM's GPU blocks.

How an event is made:

1. The scheduler side sends, with each save, vLLM's hashes of the request's blocks the save
   covers (``request.block_hashes`` as vLLM's publisher writes them: ``maybe_convert_block_hash``).
2. The worker packs, per chunk it saves, a tag: those hashes, the hash before the chunk (its
   parent), the chunk's token ids and the request's LoRA; the Java core keeps the tag with the
   chunk (``ChunkEvents``).
3. When the CPU or the disk tier stores or drops a tagged chunk, the core queues an event; the
   worker drains the queue after each step into ``BlockStored`` / ``BlockRemoved`` events
   (``medium`` ``"CPU"`` or ``"STORAGE"``, one event per chunk naming all its blocks) and hands
   them to vLLM (``get_kv_connector_kv_cache_events``).
4. The scheduler side publishes an event once every worker of the engine has reported it
   (a chunk is whole only when every tensor-parallel rank holds its part).

Not announced: chunks of a remote store (it evicts without telling; other instances write it),
files the disk tier found at start (their block hashes are not known), chunks saved while events
were off. The hashes are vLLM's own, so they match the router's view of the GPU blocks only when
both use the same ``--prefix-caching-hash-algo`` and ``PYTHONHASHSEED``, as between vLLM's own
processes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

try:
    from vllm.distributed.kv_events import BlockRemoved, BlockStored, KVConnectorKVEvents
except ImportError:  # pragma: no cover - vLLM is an optional dependency of kvtier
    KVConnectorKVEvents = object  # type: ignore[assignment,misc]

logger = logging.getLogger(__name__)

MEDIUMS = ("CPU", "STORAGE", None)
"""vLLM's medium names by the Java tier medium's ordinal (MEMORY, DISK, REMOTE): kvtier's CPU tier
is ``"CPU"``, its disk tier ``"STORAGE"`` (as vLLM's own offloading names them)."""

STORED, REMOVED = 1, 2
"""Event kinds in the core's packed output (``ChunkEvents.STORED``, ``REMOVED``)."""

MAX_QUEUED = 65536
"""Events the core keeps between two drains at most (more are dropped and counted)."""
MAX_UNHELD_TAGS = 4096
"""Tags the core keeps for chunks no tier holds (saves under way, recent evictions)."""
MAX_PENDING = 65536
"""Events the scheduler side keeps while waiting for every worker to report them."""


def enabled(vllm_config: Any) -> bool:
    """Whether vLLM publishes KV events (``--kv-events-config`` with ``enable_kv_cache_events``)."""
    events = getattr(vllm_config, "kv_events_config", None)
    return bool(events is not None and getattr(events, "enable_kv_cache_events", False))


def hash_block_size(vllm_config: Any, chunk_tokens: int) -> int | None:
    """The tokens per vLLM block hash, or None (logged) when kvtier's chunks do not hold whole
    blocks, so its chunks cannot be named by vLLM's hashes."""
    block = int(vllm_config.cache_config.block_size)
    if block <= 0 or chunk_tokens % block:
        logger.warning(
            "kvtier: KV events are off for kvtier's tiers: chunks of %d tokens do not hold whole "
            "vLLM blocks of %d tokens",
            chunk_tokens, block,
        )  # fmt: skip
        return None
    return block


def encode_hashes(block_hashes: Sequence[Any]) -> np.ndarray:
    """vLLM's block hashes as its publisher writes them (an int, or bytes when
    ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0``), as rows of int64 words: one word per int,
    ``len // 8`` big-endian words per bytes hash.

    Raises:
        ValueError: a bytes hash whose length is not a multiple of 8.
    """
    from vllm.v1.core.kv_cache_utils import maybe_convert_block_hash

    external = [maybe_convert_block_hash(h) for h in block_hashes]
    if not external:
        return np.zeros((0, 1), dtype=np.int64)
    if isinstance(external[0], int):
        return np.array(external, dtype=np.uint64).view(np.int64).reshape(-1, 1)
    width = len(external[0])
    if width % 8 or any(len(h) != width for h in external):
        raise ValueError(f"block hashes of {width} bytes cannot be carried as 64-bit words")
    raw = np.frombuffer(b"".join(external), dtype=">u8").astype(np.uint64)
    return raw.view(np.int64).reshape(-1, width // 8)


def _decode_hash(words: np.ndarray) -> int | bytes:
    if len(words) == 1:
        return int(words.view(np.uint64)[0])
    return words.view(np.uint64).astype(">u8").tobytes()


def chunk_tags(
    tokens: np.ndarray,
    hashes: np.ndarray,
    from_chunk: int,
    save_to: int,
    chunk_tokens: int,
    block: int,
    lora_id: int,
) -> list[np.ndarray | None]:
    """The tag of each chunk of ``tokens[:save_to]`` (None before ``from_chunk`` and for a chunk
    with no whole block whose hash is known): a header word ``width | has_parent << 8 | blocks <<
    16 | tokens << 32``, the LoRA id, the parent hash, the chunk's block hashes, then its token ids
    (int32, two to a word)."""
    width = hashes.shape[1] if hashes.ndim == 2 and hashes.shape[0] else 1
    per_chunk = chunk_tokens // block
    chunks = (save_to + chunk_tokens - 1) // chunk_tokens
    tags: list[np.ndarray | None] = [None] * chunks
    for c in range(from_chunk, chunks):
        start, end = c * chunk_tokens, min((c + 1) * chunk_tokens, save_to)
        first = c * per_chunk
        last = min(end // block, len(hashes))
        if last <= first:
            continue
        ids = np.ascontiguousarray(tokens[start:end], dtype=np.int32)
        if len(ids) % 2:
            ids = np.append(ids, np.int32(0))
        has_parent = first > 0
        header = width | int(has_parent) << 8 | (last - first) << 16 | (end - start) << 32
        parts = [np.array([header, lora_id], dtype=np.int64)]
        if has_parent:
            parts.append(hashes[first - 1])
        parts.append(hashes[first:last].reshape(-1))
        parts.append(ids.view(np.int64))
        tags[c] = np.concatenate(parts)
    return tags


def decode(packed: np.ndarray, block: int, lora_names: dict[int, str]) -> list[Any]:
    """The core's drained events (``ChunkEvents.drain``) as vLLM's ``BlockStored`` and
    ``BlockRemoved``, in order."""
    out: list[Any] = []
    at = 0
    while at < len(packed):
        head = int(packed[at])
        kind, medium, length = head >> 32, head >> 16 & 0xFFFF, head & 0xFFFF
        tag = packed[at + 1 : at + 1 + length]
        at += 1 + length
        name = MEDIUMS[medium] if medium < len(MEDIUMS) else None
        if name is None or length < 2:
            continue
        header, lora_id = int(tag[0]), int(tag[1])
        width, has_parent = header & 0xFF, header >> 8 & 0xFF
        blocks, tokens = header >> 16 & 0xFFFF, header >> 32
        pos = 2
        parent = None
        if has_parent:
            parent = _decode_hash(tag[pos : pos + width])
            pos += width
        hashes = [_decode_hash(tag[pos + i * width : pos + (i + 1) * width]) for i in range(blocks)]
        pos += blocks * width
        if kind == STORED:
            ids = tag[pos:].view(np.int32)[:tokens]
            out.append(
                BlockStored(
                    block_hashes=hashes,
                    parent_block_hash=parent,
                    token_ids=ids.tolist(),
                    block_size=block,
                    lora_id=lora_id or None,
                    medium=name,
                    lora_name=lora_names.get(lora_id),
                )
            )
        elif kind == REMOVED:
            out.append(BlockRemoved(block_hashes=hashes, medium=name))
    return out


class KVTierKVEvents(KVConnectorKVEvents):  # type: ignore[misc,valid-type]
    """One step's events of the engine's workers, one list per worker, each in its order.

    vLLM merges the workers' objects by adding each other worker's ``get_all_events()`` to the
    first one's (``add_events``), so each list added is one worker's. Every worker returns an
    object each step it has events to report."""

    def __init__(self, events: list[Any] | None = None) -> None:
        self._lists: list[list[Any]] = [list(events or [])]

    def add_events(self, events: list[Any]) -> None:
        self._lists.append(list(events))

    def aggregate(self) -> KVTierKVEvents:
        return self

    def increment_workers(self, count: int = 1) -> None:
        pass  # one list per worker already counts them

    def get_all_events(self) -> list[Any]:
        return [e for events in self._lists for e in events]

    def get_number_of_workers(self) -> int:
        return len(self._lists)

    def clear_events(self) -> None:
        self._lists = [[]]

    def per_worker(self) -> list[list[Any]]:
        """Each worker's events."""
        return self._lists

    def __repr__(self) -> str:
        return f"<KVTierKVEvents workers={len(self._lists)} events={sum(map(len, self._lists))}>"


class Publisher:
    """The scheduler side's part: publishes an event once ``workers`` reports of it have arrived
    (each worker reports an event once), in the order the first reports came."""

    def __init__(self, workers: int) -> None:
        self._workers = max(1, workers)
        self._pending: OrderedDict[Any, int] = OrderedDict()
        self._ready: list[Any] = []
        self.dropped = 0
        """Events given up on because too many waited for their other workers."""

    def add(self, reported: Any) -> None:
        """The events in a step's ``KVConnectorOutput.kv_cache_events`` (None: none)."""
        if reported is None:
            return
        lists = (
            reported.per_worker()
            if isinstance(reported, KVTierKVEvents)
            else [reported.get_all_events()]
        )
        for events in lists:
            for event in events:
                if self._workers == 1:
                    self._ready.append(event)
                    continue
                seen = self._pending.get(event, 0) + 1
                if seen >= self._workers:
                    del self._pending[event]
                    self._ready.append(event)
                else:
                    self._pending[event] = seen
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
            self.dropped += 1

    def take(self) -> Iterable[Any]:
        """The events every worker has reported since the last call."""
        ready, self._ready = self._ready, []
        return ready


__all__ = [
    "KVTierKVEvents",
    "Publisher",
    "chunk_tags",
    "decode",
    "enabled",
    "encode_hashes",
    "hash_block_size",
]
