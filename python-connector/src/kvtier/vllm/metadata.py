"""What the scheduler side tells the worker side each step (pickled to worker processes).

Only what changed travels: a request's prompt tokens go once, its block table as appended ids,
and a request appears in a step's metadata only when it has a load, a save or a block change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

try:  # the base class when vLLM is there; a plain object keeps this module importable without it
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorMetadata
except ImportError:  # pragma: no cover - vLLM is an optional dependency of kvtier
    KVConnectorMetadata = object  # type: ignore[assignment,misc]


@dataclass
class LoadSpec:
    """Load prompt tokens ``[start, end)`` out of the stored prefix ``tokens[0, stored)``."""

    start: int
    end: int
    stored: int
    background: bool
    """True when part of the hit is on disk or remote: the load runs off the step loop."""


@dataclass
class RequestOp:
    """One request's changes for a step."""

    req_id: str
    java_id: int
    """The request's id on the Java side (pins are kept under it)."""
    tokens: np.ndarray | None = None
    """The prompt's token ids (int32), sent with the request's first op only."""
    blocks_at: int = 0
    """Where ``new_blocks`` go in the block table; 0 replaces the table (new or resumed request)."""
    new_blocks: list[int] = field(default_factory=list)
    load: LoadSpec | None = None
    save_to: int = 0
    """Prompt tokens computed by the end of this step; chunks up to there are saved (0: none)."""
    reports_finish: bool = False
    """The scheduler delays freeing this request's blocks until the worker reports it finished."""


@dataclass
class KVTierMetadata(KVConnectorMetadata):  # type: ignore[misc,valid-type]
    """A step's metadata: per-request ops, pins to drop, requests preempted in this step."""

    ops: list[RequestOp] = field(default_factory=list)
    unpin: list[int] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
