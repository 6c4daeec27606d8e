"""What the scheduler side tells the worker side each step (pickled to worker processes).

Only what changed travels: a request's prompt tokens go once (again with a load), its block table
as appended ids (whole with a load, or after a preemption), and a request appears in a step's
metadata only when it has a load, a save, a block change or has finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

try:  # the base classes when vLLM is there; plain objects keep this module importable without it
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (
        KVConnectorMetadata,
        KVConnectorWorkerMetadata,
    )
except ImportError:  # pragma: no cover - vLLM is an optional dependency of kvtier
    KVConnectorMetadata = KVConnectorWorkerMetadata = object  # type: ignore[assignment,misc]


@dataclass
class LoadSpec:
    """Load prompt tokens ``[start, end)`` out of the stored prefix ``tokens[0, stored)``.

    vLLM has already counted ``[start, end)`` as computed when this is sent (a load is sent only
    after ``update_state_after_alloc`` confirmed it), so the worker either fills those tokens or
    reports their blocks as load errors; it never leaves them silently unwritten.
    """

    start: int
    end: int
    stored: int
    background: bool
    """True when part of the hit is on disk or remote: the load runs off the step loop, the
    request waits in vLLM's ``WAITING_FOR_REMOTE_KVS`` and the worker reports it in
    ``finished_recving`` when the load ends (loaded or not)."""
    pin: int = 0
    """The id the lookup pinned the stored chunks under; the worker releases it when the load
    ends (0: nothing pinned)."""
    failed: bool = False
    """The scheduler side could not plan this load after vLLM confirmed it: the worker reports
    ``[start, end)`` as load errors without reading any store."""


@dataclass
class RequestOp:
    """One request's changes for a step."""

    req_id: str
    tokens: np.ndarray | None = None
    """The token ids kvtier keys the request by (int32): sent with the request's first op, with
    every load and whenever they grew (``save_decode_cache``)."""
    extras: np.ndarray | None = None
    """The key extras of ``tokens`` (:func:`kvtier.keys.words`), sent with them; None: none."""
    blocks_at: int = 0
    """Where ``new_blocks`` go in the block table; 0 replaces the table (new request, resumed
    request, load)."""
    new_blocks: list[int] = field(default_factory=list)
    """Block ids to put at ``blocks_at``. With several KV cache groups, every group's block of a
    block position in turn (the core's ``CacheGroups``): ``[g0_b0, g1_b0, g0_b1, g1_b1, ...]``."""
    computed: int = 0
    """The request's tokens computed before this step (vLLM's ``num_computed_tokens``): with
    sliding-window groups, the blocks wholly before the window of the next token may have been
    freed by vLLM, and the worker no longer reads them."""
    load: LoadSpec | None = None
    save_to: int = 0
    """Prompt tokens computed by the end of this step; chunks up to there are saved (0: none)."""
    save_seq: int = 0
    """The save's number (with ``save_to``): increasing over every save the scheduler side sends,
    so a worker's report that a request's saves up to number n ended can never be taken for a
    later save, not even one of a new request reusing the id."""
    block_hashes: np.ndarray | None = None
    """With KV events on: vLLM's hashes of the request's blocks ``[hashes_at, hashes_at + n)`` as
    its publisher writes them (rows of int64 words, :func:`kvtier.vllm.events.encode_hashes`),
    sent with saves as the saved prompt grows."""
    hashes_at: int = 0
    lora: tuple[int, str] | None = None
    """With KV events on: the request's LoRA id and name (sent with ``block_hashes``)."""


@dataclass
class KVTierMetadata(KVConnectorMetadata):  # type: ignore[misc,valid-type]
    """A step's metadata: per-request ops, pins to drop, preempted and finished requests."""

    ops: list[RequestOp] = field(default_factory=list)
    unpin: list[int] = field(default_factory=list)
    """Pin ids of lookups whose load will not happen (ignored, replaced or abandoned)."""
    preempted: list[str] = field(default_factory=list)
    """Requests whose blocks vLLM freed since the last step: the worker waits for transfers out
    of or into them before the step's forward and forgets their block tables."""
    finished: dict[str, bool] = field(default_factory=dict)
    """Requests finished since the last step, with what ``request_finished`` answered: True means
    vLLM keeps the blocks until the worker reports the request in ``finished_sending``."""
    clear_local: bool = False
    """The cache was reset since the last step: the workers empty their CPU and disk tiers."""


@dataclass
class KVTierWorkerMetadata(KVConnectorWorkerMetadata):  # type: ignore[misc,valid-type]
    """What the workers tell the scheduler side each step (vLLM's worker -> scheduler channel):
    requests still running whose saves have all ended, so that vLLM can free their blocks as soon
    as they finish instead of one step later (see ``KVTierScheduler.request_finished``)."""

    saves_ended: dict[str, dict[int, int]] = field(default_factory=dict)
    """Request id -> rank -> the number (``RequestOp.save_seq``) of the last save that rank
    received for the request; every save up to it has ended (written, failed or dropped) and
    none of the request's transfers is in flight on that rank."""

    def aggregate(self, other: KVTierWorkerMetadata) -> KVTierWorkerMetadata:
        """The reports of all ranks in one step (vLLM aggregates its workers' metadata)."""
        merged = {req_id: dict(ranks) for req_id, ranks in self.saves_ended.items()}
        for req_id, ranks in other.saves_ended.items():
            into = merged.setdefault(req_id, {})
            for rank, seq in ranks.items():
                into[rank] = max(seq, into.get(rank, 0))
        return KVTierWorkerMetadata(merged)
