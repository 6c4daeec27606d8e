"""The scheduler side of the connector: lookups, load decisions, per-request state, metadata.

Lives in vLLM's EngineCore process. The stored chunks live in the workers' engines: when a worker
shares this process (one rank, the in-process executor) lookups are plain calls into it; otherwise
each rank's worker answers on a Unix socket and the smallest hit over the ranks counts.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kvtier import _jvm
from kvtier.errors import JavaError
from kvtier.vllm import worker as worker_side
from kvtier.vllm._lookup import LookupClient, LookupFailed, LookupUnavailable, socket_path
from kvtier.vllm.metadata import KVTierMetadata, LoadSpec, RequestOp

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.request import Request

logger = logging.getLogger(__name__)

Lookup = Callable[[int, np.ndarray], tuple[int, int, bool]]
"""(java request id, prompt tokens) -> (hit tokens, hit tokens in memory, next chunk being
stored); pins the hit."""

STORING_WAIT_S = 2.0
"""How long, in seconds, a request may wait for a save of its own next chunk to finish before
the scheduler stops waiting and lets vLLM compute it."""


@dataclass
class _Request:
    """What the scheduler side knows of one live request."""

    java_id: int
    tokens: np.ndarray
    blocks: list[int] = field(default_factory=list)
    blocks_sent: int = 0
    """Leading block ids the workers have; 0 makes the next op replace their table."""
    tokens_sent: bool = False
    load: LoadSpec | None = None
    """A load decided by a lookup and not yet sent to the workers."""
    saved_to: int = 0
    """Prompt tokens the workers were told to save up to."""
    reports_finish: bool = False
    waiting_since: float = 0.0
    """When the scheduler started waiting for this prompt's save to finish (0: not waiting)."""


class KVTierScheduler:
    """Scheduler-side state for one engine. Confined to the scheduler's thread."""

    def __init__(self, vllm_config: VllmConfig, settings: dict[str, Any]) -> None:
        config = _jvm.java_class("io.kvtier.config.KvTierConfig").load(settings)
        self._chunk_tokens = int(config.chunkTokens())
        self._save_unfull = bool(config.saveUnfullChunk())
        self._lookup_timeout_s = int(config.remoteTimeoutMs()) / 1000 + 5
        transfer = vllm_config.kv_transfer_config
        self._can_load = transfer.kv_role in ("kv_both", "kv_consumer")
        self._can_save = transfer.kv_role in ("kv_both", "kv_producer")
        self._engine_id = str(transfer.engine_id)
        self._ranks = int(vllm_config.parallel_config.world_size)
        self._requests: dict[str, _Request] = {}
        self._unpin: list[int] = []
        self._ids = itertools.count(1)
        self._lookup: Lookup | None = None
        self._failed_lookups = 0

    # ---- lookups ----------------------------------------------------------------------------

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        """Stored tokens beyond ``num_computed_tokens`` and whether they load in the background;
        ``None`` (ask again next step) while the prompt's next chunk is being saved, as when the
        same prompt comes again right after the first finished."""
        req = self._request(request)
        if not self._can_load:
            return 0, False
        prompt = len(req.tokens)
        if prompt < self._chunk_tokens and not self._save_unfull:
            return 0, False
        try:
            hit, in_memory, storing = self._lookups()(req.java_id, req.tokens)
        except (LookupUnavailable, LookupFailed, JavaError) as e:
            self._failed_lookups += 1
            if self._failed_lookups == 1:
                logger.warning("kvtier: lookup failed, counted as a miss (logged once): %s", e)
            return 0, False
        if storing and hit < prompt:
            now = time.monotonic()
            req.waiting_since = req.waiting_since or now
            if now - req.waiting_since < STORING_WAIT_S:
                return None, False
        req.waiting_since = 0.0
        # One token is always left for vLLM to compute, so a full hit still yields logits.
        end = min(hit, request.num_tokens - 1)
        if end <= num_computed_tokens:
            req.load = None
            if hit > 0:
                self._unpin.append(req.java_id)
            return 0, False
        req.load = LoadSpec(num_computed_tokens, end, hit, background=in_memory < end)
        return end - num_computed_tokens, req.load.background

    def _lookups(self) -> Lookup:
        if self._lookup is None:
            local = worker_side.local_worker(self._engine_id)
            if local is not None and self._ranks == 1:
                self._lookup = local.lookup
            else:
                paths = [socket_path(self._engine_id, r) for r in range(self._ranks)]
                client = LookupClient(paths, timeout_s=self._lookup_timeout_s)
                self._lookup = lambda java_id, tokens: client.lookup_tiers(
                    java_id, tokens, pin=True
                )
        return self._lookup

    def _request(self, request: Request) -> _Request:
        req = self._requests.get(request.request_id)
        if req is None:
            tokens = np.asarray(request.prompt_token_ids, dtype=np.int32)
            req = _Request(java_id=next(self._ids), tokens=tokens)
            self._requests[request.request_id] = req
        return req

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        """Confirms (or drops) the load the last lookup decided, now that blocks exist."""
        req = self._requests.get(request.request_id)
        if req is None or req.load is None:
            return
        if num_external_tokens == 0:
            req.load = None
            self._unpin.append(req.java_id)
            return
        if req.load.background:
            # Not scheduled this step: the table comes from here rather than the step's output.
            req.blocks = list(blocks.get_block_ids()[0])
            req.blocks_sent = 0

    # ---- per-step metadata ------------------------------------------------------------------

    def build_connector_meta(self, out: SchedulerOutput) -> KVTierMetadata:
        """This step's loads and saves, and the block-table changes they need."""
        meta = KVTierMetadata(unpin=self._unpin)
        self._unpin = []
        for req_id in getattr(out, "preempted_req_ids", None) or ():
            req = self._requests.get(req_id)
            if req is not None:
                req.blocks, req.blocks_sent = [], 0
                meta.preempted.append(req_id)
        scheduled = set(out.num_scheduled_tokens)
        for req_id, req in self._requests.items():
            if req.load is not None and req.load.background and req_id not in scheduled:
                self._emit(meta, req_id, req, computed_to=0)
        for new in out.scheduled_new_reqs:
            req = self._requests.get(new.req_id)
            if req is None:
                continue
            req.blocks, req.blocks_sent = list(new.block_ids[0]), 0
            computed_to = new.num_computed_tokens + out.num_scheduled_tokens[new.req_id]
            self._emit(meta, new.req_id, req, computed_to)
        cached = out.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            req = self._requests.get(req_id)
            if req is None:
                continue
            new_blocks = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids:
                req.blocks, req.blocks_sent = list(new_blocks[0]) if new_blocks else [], 0
            elif new_blocks:
                req.blocks.extend(new_blocks[0])
            computed_to = cached.num_computed_tokens[i] + out.num_scheduled_tokens[req_id]
            self._emit(meta, req_id, req, computed_to)
        return meta

    def _emit(self, meta: KVTierMetadata, req_id: str, req: _Request, computed_to: int) -> None:
        save_to = 0
        prompt = len(req.tokens)
        if self._can_save and req.saved_to < prompt and computed_to > 0:
            end = min(computed_to, prompt)
            whole = end == prompt and self._save_unfull
            savable = end if whole else end // self._chunk_tokens * self._chunk_tokens
            if savable > req.saved_to:
                save_to = req.saved_to = savable
        load, req.load = req.load, None
        if load is None and save_to == 0:
            return
        reports = save_to > 0 or (load is not None and load.background)
        req.reports_finish |= reports
        meta.ops.append(
            RequestOp(
                req_id=req_id,
                java_id=req.java_id,
                tokens=None if req.tokens_sent else req.tokens,
                blocks_at=req.blocks_sent,
                new_blocks=req.blocks[req.blocks_sent :],
                load=load,
                save_to=save_to,
                reports_finish=reports,
            )
        )
        req.tokens_sent = True
        req.blocks_sent = len(req.blocks)

    def request_finished(self, request: Request) -> bool:
        """Forgets the request; True when the workers report it before its blocks are freed."""
        req = self._requests.pop(request.request_id, None)
        if req is None:
            return False
        if req.load is not None:
            self._unpin.append(req.java_id)
        return req.reports_finish
