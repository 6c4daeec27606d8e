"""The scheduler side of the connector: lookups, load decisions, per-request state, metadata.

Lives in vLLM's EngineCore process. The stored chunks live in the workers' engines: when a worker
shares this process (one rank, the in-process executor) lookups are plain calls into it; otherwise
each rank's worker answers on a Unix socket and the smallest hit over the ranks counts.

vLLM's scheduler contract, as vLLM 0.32's ``Scheduler`` drives a connector
---------------------------------------------------------------------------
- ``get_num_new_matched_tokens`` (a *lookup*) is asked for a waiting request whose
  ``num_computed_tokens`` is 0: a new request, a preempted one, or one whose background load
  failed whole. It may be asked again in later steps for the same request (the answer was None,
  the token budget ran out, or the allocation failed) and is never followed by anything when the
  request is aborted while waiting. A lookup therefore commits nothing: it pins what it reports
  and those pins go when the request is looked up again, finishes or is confirmed.
- ``update_state_after_alloc`` (an *allocation*) comes only after ``allocate_slots`` succeeded, in
  the same ``schedule()`` call as the lookup. ``num_external_tokens > 0`` is vLLM committing to the
  load: it counts those tokens as computed, so from here on they are either loaded or reported as
  load errors (``get_block_ids_with_load_errors``; kvtier forces ``kv_load_failure_policy`` to
  ``recompute``). A background load puts the request in ``WAITING_FOR_REMOTE_KVS`` until the
  worker reports it in ``finished_recving``; vLLM then calls this again with 0 when it schedules
  the request. When ``allocate_slots`` fails nothing is called.
- ``build_connector_meta`` ends every ``schedule()``; its output names the requests scheduled
  (new, running, resumed after a preemption), those preempted (their blocks already freed) and
  those finished since the last step. ``reset_prefix_cache`` can preempt a running request and
  let the next ``schedule()`` look it up and resume it before that output is built.
- ``request_finished`` is called once, from any state (a stop, an abort on client disconnect, an
  error). True keeps the blocks until the worker reports the request in ``finished_sending``;
  a request waiting for a background load keeps its blocks anyway until ``finished_recving``, and
  then a ``finished_sending`` for it as well would fail vLLM's assertion that the request exists.
- ``update_connector_output`` sees each step's worker report right before vLLM acts on it. vLLM
  asserts that a ``finished_recving`` names a request waiting for remote KV (or finished while
  waiting) and that a ``finished_sending`` names a request it still holds.
- With async scheduling the next ``schedule()`` (its lookups, preemptions and finishes included)
  can run before the workers have run the previous step; the workers run steps in order.

What kvtier promises in return
------------------------------
- A load reaches the workers only once confirmed, with the block table vLLM allocated for it.
- Every confirmed load ends loaded or reported: its missing tokens' blocks in
  ``get_block_ids_with_load_errors``, and a background load in ``finished_recving`` either way
  (unless vLLM preempted the request first, which vLLM 0.32 never does to a waiting one).
- ``request_finished`` answers True exactly when saves went out of the request's current blocks
  that not every rank has reported ended yet (``KVTierWorkerMetadata``, vLLM's worker-to-scheduler
  channel, carries those reports each step while the request runs, so a request whose saves ended
  during its decode frees its blocks at once); the answer travels to the workers
  (``KVTierMetadata.finished``), which report those requests, and only those, in
  ``finished_sending`` once their saves ended, never one they also report in
  ``finished_recving``.
- No block is read or written after vLLM may reuse it: the workers wait for a preempted request's
  transfers in ``handle_preemptions`` before the step's forward, and finished requests keep their
  blocks while kvtier uses them (above).
- No exception leaves a connector method: a failure is a miss, a failed load (recomputed) or a
  dropped save, whichever keeps vLLM's view of the request true.
"""

from __future__ import annotations

import enum
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kvtier import _bridge, keys
from kvtier.errors import JavaError
from kvtier.vllm import events, request_keys
from kvtier.vllm import worker as worker_side
from kvtier.vllm._lookup import LookupClient, LookupFailed, LookupUnavailable, socket_path
from kvtier.vllm.groups import FULL_ATTENTION, KvGroups
from kvtier.vllm.metadata import KVTierMetadata, KVTierWorkerMetadata, LoadSpec, RequestOp
from kvtier.vllm.stats import KVTierConnectorStats

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

logger = logging.getLogger(__name__)

Lookup = Callable[[int, np.ndarray, np.ndarray | None], tuple[int, int, bool, bool]]
"""(pin id, prompt tokens, key extras) -> (hit tokens, hit tokens in memory, next chunk being
stored, remote answer pending); pins the hit under the pin id. Never waits on the network: a
remote store's answer that is not in yet is "pending" (ask again next step); the workers bound
the wait by ``remote_timeout_ms``, after which the remote part counts as a miss."""


class State(enum.Enum):
    """Where one request stands with the connector (see :data:`TRANSITIONS`)."""

    LOOKED_UP = "looked up"
    """A lookup answered; its pins are held and its load is only a plan."""
    LOAD_CONFIRMED = "load confirmed"
    """vLLM allocated blocks for a load from CPU memory; it runs in this step, before the
    forward."""
    LOADING = "loading"
    """vLLM allocated blocks for a load that runs in the background; the request waits in
    ``WAITING_FOR_REMOTE_KVS`` until the worker reports it in ``finished_recving``."""
    LOADED = "loaded"
    """The background load was reported; vLLM schedules the request next (or, if the load failed
    whole, looks it up again)."""
    RUNNING = "running"
    """Scheduled with blocks; no save has gone out of its current blocks."""
    SAVING = "saving"
    """Scheduled with blocks; saves have gone out of its current blocks."""
    PREEMPTED = "preempted"
    """vLLM freed its blocks; a lookup comes next, then the request is resumed."""
    FINISHED_LOADING = "finished while loading"
    """Finished while its background load ran; vLLM frees the blocks at ``finished_recving``."""
    FINISHED_SAVING = "finished while saving"
    """``request_finished`` answered True; vLLM frees the blocks at ``finished_sending``."""


class Event(enum.Enum):
    """What vLLM's scheduler does to a request, as the connector sees it."""

    LOOKUP = "get_num_new_matched_tokens"
    ALLOC_LOAD = "update_state_after_alloc confirming a load from memory"
    ALLOC_BACKGROUND = "update_state_after_alloc confirming a background load"
    ALLOC_NONE = "update_state_after_alloc with no external tokens"
    SCHEDULED = "scheduled in build_connector_meta"
    SAVE = "a save sent from build_connector_meta"
    PREEMPTED = "preempted in build_connector_meta"
    SAVES_ENDED = "every rank reported the saves sent ended"
    RECEIVED = "finished_recving"
    SENT = "finished_sending"
    FINISHED = "request_finished"


FORGOTTEN = None
"""The target of a transition after which the connector keeps nothing of the request."""

TRANSITIONS: dict[tuple[State, Event], State | None] = {
    (State.LOOKED_UP, Event.LOOKUP): State.LOOKED_UP,
    (State.LOOKED_UP, Event.ALLOC_LOAD): State.LOAD_CONFIRMED,
    (State.LOOKED_UP, Event.ALLOC_BACKGROUND): State.LOADING,
    (State.LOOKED_UP, Event.ALLOC_NONE): State.RUNNING,
    (State.LOOKED_UP, Event.FINISHED): FORGOTTEN,
    (State.LOAD_CONFIRMED, Event.SCHEDULED): State.RUNNING,
    (State.LOAD_CONFIRMED, Event.FINISHED): FORGOTTEN,
    (State.LOADING, Event.RECEIVED): State.LOADED,
    (State.LOADING, Event.PREEMPTED): State.PREEMPTED,
    (State.LOADING, Event.FINISHED): State.FINISHED_LOADING,
    (State.LOADED, Event.LOOKUP): State.LOOKED_UP,
    (State.LOADED, Event.ALLOC_NONE): State.LOADED,
    (State.LOADED, Event.SCHEDULED): State.RUNNING,
    (State.LOADED, Event.FINISHED): FORGOTTEN,
    (State.RUNNING, Event.LOOKUP): State.LOOKED_UP,
    (State.RUNNING, Event.ALLOC_NONE): State.RUNNING,
    (State.RUNNING, Event.SCHEDULED): State.RUNNING,
    (State.RUNNING, Event.SAVE): State.SAVING,
    (State.RUNNING, Event.PREEMPTED): State.PREEMPTED,
    (State.RUNNING, Event.FINISHED): FORGOTTEN,
    (State.SAVING, Event.LOOKUP): State.LOOKED_UP,
    (State.SAVING, Event.ALLOC_NONE): State.SAVING,
    (State.SAVING, Event.SCHEDULED): State.SAVING,
    (State.SAVING, Event.SAVE): State.SAVING,
    (State.SAVING, Event.SAVES_ENDED): State.RUNNING,
    (State.SAVING, Event.PREEMPTED): State.PREEMPTED,
    (State.SAVING, Event.FINISHED): State.FINISHED_SAVING,
    (State.PREEMPTED, Event.LOOKUP): State.LOOKED_UP,
    (State.PREEMPTED, Event.FINISHED): FORGOTTEN,
    (State.FINISHED_LOADING, Event.RECEIVED): FORGOTTEN,
    (State.FINISHED_SAVING, Event.SENT): FORGOTTEN,
}
"""Every transition vLLM's scheduler can cause; any other (state, event) is refused.

=================  ===============================================================================
state              event -> next state
=================  ===============================================================================
(none)             lookup -> LOOKED_UP
LOOKED_UP          lookup -> LOOKED_UP (the earlier pins released); alloc with a load from memory
                   -> LOAD_CONFIRMED; alloc with a background load -> LOADING; alloc with no
                   external tokens -> RUNNING (pins released); finished -> forgotten (pins
                   released, answer False)
LOAD_CONFIRMED     scheduled -> RUNNING (the load goes out with the step); finished -> forgotten
                   (the load is dropped: vLLM frees the blocks at once)
LOADING            finished_recving -> LOADED; preempted -> PREEMPTED (the worker waits for the
                   load and reports nothing); finished -> FINISHED_LOADING (answer False)
LOADED             lookup -> LOOKED_UP (the load failed whole; answered as a miss, so a load
                   that keeps failing cannot hold the request); alloc with no external tokens ->
                   LOADED; scheduled -> RUNNING; finished -> forgotten (answer False)
RUNNING            lookup -> LOOKED_UP (preempted and looked up in one ``schedule()``);
                   alloc with no external tokens -> RUNNING; scheduled -> RUNNING; a save sent ->
                   SAVING; preempted -> PREEMPTED; finished -> forgotten (answer False)
SAVING             lookup -> LOOKED_UP (as from RUNNING); alloc with no external tokens, scheduled
                   or a save sent -> SAVING; every rank reported the saves sent ended -> RUNNING;
                   preempted -> PREEMPTED (the worker waits for the saves); finished ->
                   FINISHED_SAVING (answer True)
PREEMPTED          lookup -> LOOKED_UP; finished -> forgotten (answer False)
FINISHED_LOADING   finished_recving -> forgotten
FINISHED_SAVING    finished_sending -> forgotten
=================  ===============================================================================

A refused event is logged once per (state, event) and turned into a miss: a lookup answers 0, an
allocation that vLLM counted external tokens for is sent as a failed load (its blocks come back as
load errors, so vLLM recomputes them), a scheduled request sends nothing, a preemption changes
nothing. A transfer report is never dropped for being refused (inside a MultiConnector it may be
another connector's), only when vLLM's own status shows it would fail vLLM's assertions (see
``update_connector_output``). A request that finished is kept apart from live ones, so a new
request reusing its id starts afresh.
"""


@dataclass
class _Request:
    """What the scheduler side knows of one request. Changes state through
    :meth:`KVTierScheduler._move` (the one exception: ``request_finished`` failing, which holds the
    blocks when in doubt)."""

    req_id: str
    tokens: np.ndarray
    """The token ids kvtier keys the request by: the prompt, and with ``save_decode_cache`` the
    generated tokens as they become known."""
    extras: np.ndarray | None
    """The key extras of ``tokens`` (:func:`kvtier.keys.words`; None: a plain prompt before any
    reset)."""
    root: bytes
    """The cache epoch the request is keyed in (kept for its life, so its chain stays whole)."""
    request: Any = None
    """vLLM's ``Request`` (its status tells which reports vLLM expects)."""
    state: State = State.LOOKED_UP
    pin: int = 0
    """Pins of the last lookup this side still owns (0: none); a load sent hands them to the
    worker, which releases them when the load ends."""
    plan: LoadSpec | None = None
    """LOOKED_UP: the load the last lookup found."""
    lookup_start: int = 0
    """The ``num_computed_tokens`` the last lookup was asked with (where a load starts)."""
    answered_async: bool = False
    """What the last lookup told vLLM about loading in the background."""
    outbox: LoadSpec | None = None
    """A confirmed load not yet sent to the workers."""
    blocks: list[int] = field(default_factory=list)
    """vLLM's block table (with several KV cache groups, every group's block of a block position
    in turn: ``RequestOp.new_blocks``)."""
    blocks_sent: int = 0
    """Leading block ids the workers have; 0 makes the next op replace their table."""
    tokens_sent: bool = False
    computed: int = 0
    """vLLM's ``num_computed_tokens`` when the request was last scheduled
    (``RequestOp.computed``)."""
    saved_to: int = 0
    """Prompt tokens the workers were told to save up to."""
    save_seq: int = 0
    """The number of the last save sent for the request (``RequestOp.save_seq``; 0: none)."""
    saves_ended: dict[int, int] = field(default_factory=dict)
    """Rank -> the number of the last save that rank reported ended with nothing in flight."""
    waiting_since: float = 0.0
    """When the scheduler started waiting for this prompt's save to finish (0: not waiting)."""
    preemption_applied: bool = False
    """A lookup already applied the preemption this step's output reports."""
    unkeyable: bool = False
    """vLLM keys the request with an input kvtier cannot key: never loaded nor saved."""
    hit_memory: int = 0
    """Of the last lookup's hit, the leading tokens whose chunks are in CPU memory."""
    hit_local: int = 0
    """Of the last lookup's hit, the leading tokens in this instance's tiers (CPU or disk)."""
    asked: int = 0
    """Tokens the last answered lookup was asked about, until vLLM admits the request."""
    hit_sources: dict[str, int] = field(default_factory=dict)
    """Where the tokens of the last confirmed load are stored: source (cpu, disk, remote) ->
    tokens."""
    hashes_sent: int = 0
    """With KV events on: leading block hashes the workers have."""
    loading: tuple[int, int, bool] | None = None
    """The last confirmed load (start, end, background) until the step output that reports its
    failed blocks, if any: the step that ran it, or for a background load the one that reports
    it received (its tokens are counted as hits by source in ``hit_sources``)."""


class KVTierScheduler:
    """Scheduler-side state for one engine. Confined to the scheduler's thread.

    No method raises: a failure is logged (once per kind) and turned into a miss, a failed load
    or a dropped save, whichever keeps vLLM's view of the request true.
    """

    def __init__(
        self,
        vllm_config: VllmConfig,
        settings: dict[str, Any],
        kv_groups: KvGroups = FULL_ATTENTION,
    ) -> None:
        """Reads the settings through the scheduler's Java facade, so in a JVM of this process.
        ``kv_groups``: what the model's KV cache groups are (:mod:`kvtier.vllm.groups`).

        That loader already does the YAML file, ``KVTIER_*`` overrides, validation (unknown keys
        name the closest known one) and secret redaction; doing it again in Python would copy
        that logic. With vLLM's in-process executor the worker starts the same JVM anyway.

        Raises:
            kvtier.JavaValueError: a bad setting (the message names the key and value).
        """
        config = _bridge.scheduler.load_config(settings)
        self._chunk_tokens = int(config.chunkTokens())
        self._save_unfull = bool(config.saveUnfullChunk())
        self._save_decode = bool(config.saveDecodeCache())
        block = int(vllm_config.cache_config.block_size)
        self._block_tokens = block
        self._group_count = kv_groups.count
        self._tail_tokens = (
            self._chunk_tokens
            if kv_groups.sliding
            else 1
            if self._save_unfull
            else block
            if block < self._chunk_tokens and self._chunk_tokens % block == 0
            else self._chunk_tokens
        )
        """What a prompt's last, partial chunk is stored in multiples of (docs/keys.md, "Block
        prefixes"): every token with ``save_unfull_chunk``, else whole vLLM blocks where they
        divide the chunk, else nothing (whole chunks only); whole chunks only for a
        sliding-window model, whose hits are whole chunks."""
        self._root = keys.ZERO
        """The cache epoch's root digest: zero until ``reset_cache`` picks a new epoch."""
        self._clear_local = False
        """A reset happened since the last metadata: the workers empty their local tiers."""
        self._lookup_timeout_s = int(config.remoteTimeoutMs()) / 1000 + 5
        self._storing_wait_s = int(config.storingWaitMs()) / 1000
        """How long a request may wait for another request's save of the chunk that would extend
        its hit (``storing_wait_ms``)."""
        self._memory_hit_loads = str(config.memoryHitLoads())
        """Where hits from CPU memory load: ``in_step`` or ``background``."""
        self._scheduled_last_step = 0
        """Requests the last ``schedule()`` scheduled."""
        self._admitted_this_step = 0
        """Requests vLLM allocated blocks for since the last ``build_connector_meta``."""
        transfer = vllm_config.kv_transfer_config
        self._can_load = transfer.kv_role in ("kv_both", "kv_consumer")
        self._can_save = transfer.kv_role in ("kv_both", "kv_producer")
        self._engine_id = str(transfer.engine_id)
        self._ranks = int(vllm_config.parallel_config.world_size)
        self._live: dict[str, _Request] = {}
        self._finishing: dict[str, _Request] = {}
        """Requests vLLM still holds blocks for after request_finished, by id."""
        self._unpin: list[int] = []
        self._preempted: list[str] = []
        """Preemptions a lookup applied; the next metadata tells the workers."""
        self._finished: dict[str, bool] = {}
        """request_finished answers since the last metadata."""
        self._failed_loads: list[RequestOp] = []
        """Loads vLLM counted on for requests kvtier never looked up; sent as failed loads so
        their blocks are recomputed."""
        self._pins = itertools.count(1)
        self._save_seqs = itertools.count(1)
        self._lookup: Lookup | None = None
        self._logged: set[object] = set()
        self.failures = 0
        """Failures turned into misses, failed loads or dropped saves (for tests and stats)."""
        self.dropped_reports = 0
        """Worker reports dropped because vLLM does not expect them (for tests and stats)."""
        self.unkeyable = 0
        """Requests not cached because kvtier cannot key them (for tests and stats)."""
        self.remote_pending = 0
        """Lookups answered "ask again" because a remote store's answer was pending."""

        self._stats = KVTierConnectorStats()
        self._stats_counted = (0, 0)
        """``failures`` and ``unkeyable`` as of the last report."""
        self._events_block = (
            events.hash_block_size(vllm_config, self._chunk_tokens)
            if events.enabled(vllm_config) and self._can_save
            else None
        )
        """Tokens per vLLM block hash while KV events are on (None: off)."""
        self._publisher = events.Publisher(self._ranks)

    # ---- state machine ------------------------------------------------------------------------

    def _move(self, req: _Request, event: Event) -> bool:
        """Applies ``event`` to ``req`` per :data:`TRANSITIONS`; False (logged once) when the
        table refuses it, in which case nothing changes."""
        key = (req.state, event)
        if key not in TRANSITIONS:
            self._log_once(
                key,
                "kvtier: ignored %s for request %s in state %s (not in vLLM's scheduler contract; "
                "logged once per state and event)",
                event.value, req.req_id, req.state.value,
            )  # fmt: skip
            return False
        target = TRANSITIONS[key]
        if target is FORGOTTEN:
            self._live.pop(req.req_id, None)
            if self._finishing.get(req.req_id) is req:
                del self._finishing[req.req_id]
        else:
            req.state = target
        return True

    def _log_once(self, key: object, message: str, *args: Any, exc: bool = False) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(message, *args, exc_info=exc)

    def _failed(self, where: str, req_id: str) -> None:
        """Counts and logs (once per place) an exception caught in ``where``."""
        self.failures += 1
        self._log_once(
            ("failure", where),
            "kvtier: %s failed for request %s; turned into a miss (logged once)",
            where, req_id, exc=True,
        )  # fmt: skip

    def state_of(self, req_id: str) -> State | None:
        """The state of a live or finishing request (None: not known)."""
        req = self._live.get(req_id) or self._finishing.get(req_id)
        return req.state if req is not None else None

    # ---- lookups ------------------------------------------------------------------------------

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        """Stored tokens beyond ``num_computed_tokens`` and whether they load in the background;
        ``None`` (ask again next step) while the prompt's next chunk is being saved, as when the
        same prompt comes again right after the first finished. Pins what it reports; commits
        nothing."""
        req_id = request.request_id
        try:
            answer = self._look_up(request, num_computed_tokens)
        except Exception:  # a lookup never fails a request
            self._failed("lookup", req_id)
            answer = (0, False)
            req = self._live.get(req_id)
            if req is not None:
                self._release_pin(req)
                req.plan = None
        req = self._live.get(req_id)
        if req is not None:
            req.answered_async = answer[1]
        return answer

    def _look_up(self, request: Request, num_computed_tokens: int) -> tuple[int | None, bool]:
        req = self._live.get(request.request_id)
        if req is None:
            req = self._new_request(request)
            self._live[req.req_id] = req
        else:
            before = req.state
            if not self._move(req, Event.LOOKUP):
                return 0, False
            if before in (State.RUNNING, State.SAVING):
                # Preempted (reset_prefix_cache) and looked up again before build_connector_meta:
                # the workers learn of it ahead of this step's new block table.
                self._forget_blocks(req)
                self._preempted.append(req.req_id)
                req.preemption_applied = True
            self._release_pin(req)
            req.plan = None
            if req.root != self._root:  # the cache was reset since: keyed in the new epoch
                req = self._live[req.req_id] = self._rekeyed(req)
            if before is State.LOADED:
                # Its background load failed whole; loading again could fail the same way
                # forever, so this time vLLM computes it.
                return 0, False
        req.lookup_start = num_computed_tokens
        if not self._can_load or req.unkeyable:
            return 0, False
        prompt = len(req.tokens)
        if prompt < self._tail_tokens:
            return 0, False
        pin = next(self._pins)
        began = time.perf_counter()
        try:
            hit, in_memory, storing, pending, local = self._lookups()(pin, req.tokens, req.extras)
            self._stats.observe("kvtier_lookup_seconds", (time.perf_counter() - began,))
        except (LookupUnavailable, LookupFailed, JavaError) as e:
            self._unpin.append(pin)  # the ranks that answered may have pinned
            self.failures += 1
            self._log_once(
                "lookup", "kvtier: lookup failed, counted as a miss (logged once): %s", e
            )
            return 0, False
        if pending and prompt - max(hit, num_computed_tokens) >= self._chunk_tokens:
            # A remote store's answer is on its way: ask again next step. Only where the remote
            # part could be a whole chunk: less is not worth holding the request back a step.
            self._unpin.append(pin)
            self.remote_pending += 1
            self._stats.count("kvtier_lookups_deferred", 1, "remote_pending")
            return None, False
        if storing and hit < prompt and hit + self._chunk_tokens > num_computed_tokens:
            # The chunk being saved would load tokens vLLM does not hold itself.
            now = time.monotonic()
            req.waiting_since = req.waiting_since or now
            if now - req.waiting_since < self._storing_wait_s:
                self._unpin.append(pin)
                self._stats.count("kvtier_lookups_deferred", 1, "storing")
                return None, False
        req.waiting_since = 0.0
        req.asked = request.num_tokens - num_computed_tokens
        # One token is always left for vLLM to compute, so a full hit still yields logits.
        end = min(hit, request.num_tokens - 1)
        if end <= num_computed_tokens:
            if hit > 0:
                self._unpin.append(pin)
            return 0, False
        req.pin = pin
        req.hit_memory = in_memory
        req.hit_local = local
        background = in_memory < end or self._load_in_background()
        req.plan = LoadSpec(num_computed_tokens, end, hit, background=background, pin=pin)
        return end - num_computed_tokens, req.plan.background

    def _load_in_background(self) -> bool:
        """Whether a hit from CPU memory loads in the background (``memory_hit_loads``): with
        ``background`` where another request runs, i.e. one was scheduled in the last step or
        admitted in this one. A request alone always loads in its step: in the background it
        would only take a step longer."""
        return self._memory_hit_loads == "background" and (
            self._scheduled_last_step + self._admitted_this_step > 0
        )

    def _lookups(self) -> Lookup:
        if self._lookup is None:
            local = worker_side.local_worker(self._engine_id)
            if local is not None and self._ranks == 1:
                self._lookup = local.lookup
            else:
                paths = [socket_path(self._engine_id, r) for r in range(self._ranks)]
                client = LookupClient(paths, timeout_s=self._lookup_timeout_s)
                self._lookup = lambda pin, tokens, extras: client.lookup_tiers(
                    pin, tokens, pin=True, extras=extras
                )
        return self._lookup

    def _rekeyed(self, req: _Request) -> _Request:
        """``req`` keyed in the current epoch, nothing saved in it yet."""
        fresh = self._new_request(req.request)
        fresh.state, fresh.blocks, fresh.blocks_sent = req.state, req.blocks, req.blocks_sent
        fresh.computed = req.computed
        fresh.lookup_start, fresh.preemption_applied = req.lookup_start, req.preemption_applied
        fresh.save_seq, fresh.saves_ended = req.save_seq, req.saves_ended
        return fresh

    def _new_request(self, request: Request) -> _Request:
        """What kvtier keys a request by: its prompt's token ids and key extras."""
        tokens = request_keys.token_ids(request, request.num_prompt_tokens)
        req = _Request(request.request_id, tokens, None, self._root, request)
        try:
            req.extras = request_keys.key_extras(
                request, len(tokens), self._chunk_tokens, self._root
            )
        except keys.UnkeyableRequest as e:
            req.unkeyable = True
            self.unkeyable += 1
            self._log_once(
                "unkeyable",
                "kvtier: request %s is not cached: %s (counted; logged once)",
                req.req_id, e,
            )  # fmt: skip
        return req

    def _release_pin(self, req: _Request) -> None:
        if req.pin:
            self._unpin.append(req.pin)
            req.pin = 0

    def _forget_blocks(self, req: _Request) -> None:
        """vLLM freed the request's blocks: the next op replaces the workers' table."""
        req.blocks, req.blocks_sent = [], 0

    # ---- allocation -----------------------------------------------------------------------------

    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        """Confirms the load the last lookup planned (``num_external_tokens > 0``) or drops it."""
        self._admitted_this_step += 1
        req = self._live.get(request.request_id)
        if req is not None and req.asked:  # counted at admission, as vLLM counts its own queries
            self._stats.count("kvtier_lookups", 1)
            self._stats.count("kvtier_lookup_tokens", req.asked)
            req.asked = 0
        try:
            if req is None:
                if num_external_tokens > 0:
                    self._log_once(
                        "alloc-unknown",
                        "kvtier: vLLM counted %d external tokens for request %s, which kvtier "
                        "never looked up; reported as load errors (logged once)",
                        num_external_tokens, request.request_id,
                    )  # fmt: skip
                    spec = LoadSpec(0, num_external_tokens, 0, False, failed=True)
                    table = self._table(blocks.get_block_ids())
                    self._failed_loads.append(RequestOp(request.request_id, None, 0, table, spec))
                return
            self._confirm(req, blocks, num_external_tokens)
        except Exception:  # vLLM has committed; the load becomes a failed one
            self._failed("update_state_after_alloc", request.request_id)
            if req is not None and num_external_tokens > 0 and req.outbox is None:
                self._confirm_failed(req, blocks, num_external_tokens)

    def _confirm(self, req: _Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        if num_external_tokens == 0:
            if self._move(req, Event.ALLOC_NONE):
                self._release_pin(req)
                req.plan = None
            return
        plan = req.plan
        end = req.lookup_start + num_external_tokens
        if req.state is not State.LOOKED_UP or plan is None or end > plan.end:
            self._log_once(
                ("alloc-unplanned", req.state),
                "kvtier: vLLM counted %d external tokens for request %s in state %s, more than "
                "kvtier offered; reported as load errors (logged once)",
                num_external_tokens, req.req_id, req.state.value,
            )  # fmt: skip
            self._confirm_failed(req, blocks, num_external_tokens)
            return
        self._move(req, Event.ALLOC_BACKGROUND if plan.background else Event.ALLOC_LOAD)
        # vLLM may take less than offered (e.g. trimmed to a block boundary): load only that.
        req.outbox = LoadSpec(plan.start, end, plan.stored, plan.background, pin=plan.pin)
        self._count_hit(req, plan.start, end)
        req.loading = (plan.start, end, plan.background)
        req.pin, req.plan = 0, None
        req.blocks, req.blocks_sent = self._table(blocks.get_block_ids()), 0

    def _count_hit(self, req: _Request, start: int, end: int) -> None:
        """Counts the tokens of a confirmed load by where they are stored: CPU memory, then
        disk, then the remote store (the lookup told where each part lies)."""
        memory = max(0, min(end, req.hit_memory) - start)
        local = max(memory, min(end, req.hit_local) - start)
        parts = (("cpu", memory), ("disk", local - memory), ("remote", end - start - local))
        req.hit_sources = {k: v for k, v in parts if v > 0}
        for source, tokens in req.hit_sources.items():
            self._stats.count("kvtier_hit_tokens", tokens, source)

    def get_external_cache_hit_sources(
        self, request: Request, num_external_tokens: int
    ) -> dict[Any, int]:
        """vLLM's ``CacheHitSource`` split of the tokens the request's confirmed load brings:
        CPU memory is ``host``, the disk tier ``disk``; a remote store (which vLLM has no name
        for) is ``external_unspecified``."""
        from vllm.v1.metrics.cache_hit_source import CacheHitSource

        req = self._live.get(request.request_id)
        if req is None or sum(req.hit_sources.values()) != num_external_tokens:
            return {CacheHitSource.EXTERNAL_UNSPECIFIED: num_external_tokens}
        names = {"cpu": CacheHitSource.HOST, "disk": CacheHitSource.DISK}
        out: dict[Any, int] = {}
        for source, tokens in req.hit_sources.items():
            key = names.get(source, CacheHitSource.EXTERNAL_UNSPECIFIED)
            out[key] = out.get(key, 0) + tokens
        return out

    def get_kv_connector_stats(self) -> KVTierConnectorStats | None:
        """What the scheduler side counted since the last call (lookups, hits by source,
        deferred lookups, lookup times, failures, unkeyable requests); None when nothing."""
        failures, unkeyable = self._stats_counted
        self._stats.count("kvtier_connector_failures", self.failures - failures, "scheduler")
        self._stats.count("kvtier_unkeyable_requests", self.unkeyable - unkeyable)
        self._stats_counted = (self.failures, self.unkeyable)
        if self._stats.is_empty():
            return None
        report, self._stats = self._stats, KVTierConnectorStats()
        return report

    def _confirm_failed(
        self, req: _Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        """vLLM counted tokens kvtier cannot load: the request takes the state vLLM put it in,
        with a load that only reports those tokens' blocks as load errors (and, in the
        background, finishes receiving), so vLLM recomputes them."""
        background = req.answered_async
        if req.state is State.LOOKED_UP:
            self._move(req, Event.ALLOC_BACKGROUND if background else Event.ALLOC_LOAD)
        start = req.lookup_start
        end = start + num_external_tokens
        req.outbox = LoadSpec(start, end, end, background, pin=req.pin, failed=True)
        req.pin, req.plan = 0, None
        try:
            req.blocks = self._table(blocks.get_block_ids())
        except Exception:  # a load from memory gets the table vLLM schedules the request with
            self._failed("reading the block table", req.req_id)
            req.blocks = []
        req.blocks_sent = 0

    # ---- per-step metadata ----------------------------------------------------------------------

    def build_connector_meta(self, out: SchedulerOutput) -> KVTierMetadata:
        """This step's loads and saves, the block-table changes they need, and the requests
        preempted and finished since the last step. Never raises; a request whose part fails
        loses its saves, never a load vLLM counts on."""
        meta = KVTierMetadata(
            unpin=self._unpin,
            preempted=self._preempted,
            finished=self._finished,
            clear_local=self._clear_local,
        )
        self._unpin, self._preempted, self._finished = [], [], {}
        self._clear_local = False
        self._scheduled_last_step = len(getattr(out, "num_scheduled_tokens", None) or ())
        self._admitted_this_step = 0
        try:
            self._build(meta, out)
        except Exception:  # the metadata of a step is always delivered
            self._failed("build_connector_meta", "(all)")
        finally:
            # Whatever happened above, every confirmed load goes out (as a failed one if need be).
            self._send_loads(meta)
            meta.ops.extend(self._failed_loads)
            self._failed_loads = []
            for req in self._live.values():
                req.preemption_applied = False
        return meta

    def _build(self, meta: KVTierMetadata, out: SchedulerOutput) -> None:
        for req_id in getattr(out, "preempted_req_ids", None) or ():
            req = self._live.get(req_id)
            if req is None:
                continue
            if req.preemption_applied:
                req.preemption_applied = False
                continue
            if self._move(req, Event.PREEMPTED):
                self._forget_blocks(req)
                meta.preempted.append(req_id)
        for new in out.scheduled_new_reqs:
            computed = new.num_computed_tokens
            scheduled = out.num_scheduled_tokens[new.req_id]
            self._guarded(meta, new.req_id, new.block_ids, True, computed, scheduled)
        cached = out.scheduled_cached_reqs
        resumed = getattr(cached, "resumed_req_ids", None) or set()
        for i, req_id in enumerate(cached.req_ids):
            computed = cached.num_computed_tokens[i]
            scheduled = out.num_scheduled_tokens[req_id]
            new_blocks = cached.new_block_ids[i]
            self._guarded(meta, req_id, new_blocks, req_id in resumed, computed, scheduled)

    def _guarded(
        self,
        meta: KVTierMetadata,
        req_id: str,
        block_ids: tuple[list[int], ...] | None,
        replace: bool,
        computed: int,
        scheduled: int,
    ) -> None:
        req = self._live.get(req_id)
        if req is None:
            return
        try:
            blocks = self._table(block_ids) if block_ids else []
            req.computed = computed
            self._scheduled(meta, req, blocks, replace, computed + scheduled)
        except Exception:  # this request's saves are dropped; others go on
            self._failed("planning a step", req_id)

    def _table(self, block_ids: tuple[list[int], ...] | list[list[int]]) -> list[int]:
        """vLLM's block ids of a request, one list per KV cache group, as one table: every
        group's block of a block position in turn (``RequestOp.new_blocks``).

        Raises:
            ValueError: the groups are not the ones the connector started with, or their tables
                differ in length (vLLM gives every group a block per block position).
        """
        count = self._group_count
        if len(block_ids) != count:
            raise ValueError(f"{len(block_ids)} KV cache groups' block ids; expected {count}")
        if count == 1:
            return list(block_ids[0])
        if len({len(ids) for ids in block_ids}) != 1:
            raise ValueError(
                "KV cache groups' block tables differ in length: "
                + ", ".join(str(len(ids)) for ids in block_ids)
            )
        return [b for position in zip(*block_ids, strict=True) for b in position]

    def _scheduled(
        self,
        meta: KVTierMetadata,
        req: _Request,
        blocks: list[int],
        replace: bool,
        computed_to: int,
    ) -> None:
        if not self._move(req, Event.SCHEDULED):
            return
        load = req.outbox if req.outbox is not None and not req.outbox.background else None
        if replace or load is not None:
            # A confirmed load's table is the one vLLM allocated for it, which is this one.
            req.blocks, req.blocks_sent = blocks, 0
        else:
            req.blocks.extend(blocks)
        try:
            save_to = self._save_to(req, computed_to)
        except Exception:  # the request's saves are dropped; its load still goes
            self._failed("planning a save", req.req_id)
            save_to = 0
        if load is None and save_to == 0:
            return
        if save_to:
            self._move(req, Event.SAVE)
        self._op(meta, req, load, save_to)
        if load is not None:
            req.outbox = None

    def _save_to(self, req: _Request, computed_to: int) -> int:
        if not self._can_save or req.unkeyable or computed_to <= 0:
            return 0
        if self._save_decode:
            self._grow(req, computed_to)
        prompt = len(req.tokens)
        if req.saved_to >= prompt:
            return 0
        end = min(computed_to, prompt)
        savable = end // self._chunk_tokens * self._chunk_tokens
        if end == prompt:  # the prompt's last, partial chunk too, in whole blocks or tokens
            savable += (end - savable) // self._tail_tokens * self._tail_tokens
        if savable <= req.saved_to:
            return 0
        req.saved_to = savable
        return savable

    def _grow(self, req: _Request, computed_to: int) -> None:
        """With ``save_decode_cache``: extends the tokens kvtier keys the request by to the full
        chunks of generated tokens whose ids are known and whose KV this step computes (with
        async scheduling the ids of tokens in flight are not known yet)."""
        request = req.request
        known = min(computed_to, request.num_tokens)
        full = known // self._chunk_tokens * self._chunk_tokens
        if full <= len(req.tokens) or full <= request.num_prompt_tokens:
            return
        req.tokens = request_keys.token_ids(request, full)
        req.extras = request_keys.key_extras(request, full, self._chunk_tokens, req.root)
        req.tokens_sent = False

    def _send_loads(self, meta: KVTierMetadata) -> None:
        """Sends every confirmed load still waiting: background ones (their request is not
        scheduled) and any whose request vLLM did not schedule (refused: a failed load)."""
        for req in itertools.chain(list(self._live.values()), list(self._finishing.values())):
            load = req.outbox
            if load is None:
                continue
            req.outbox = None
            try:
                if not load.background:
                    # A load from memory goes with the step that schedules its request, which is
                    # the step that confirmed it; left here, it did not.
                    self._log_once(
                        "confirmed-not-sent",
                        "kvtier: the load confirmed for request %s did not go out with its step; "
                        "its blocks are reported as load errors (logged once)",
                        req.req_id,
                    )  # fmt: skip
                    load.failed = True
                req.blocks_sent = 0
                self._op(meta, req, load, 0)
            except Exception:  # the load still goes out, as a failed one
                self._failed("sending a load", req.req_id)
                load.failed = True
                meta.ops.append(RequestOp(req.req_id, new_blocks=list(req.blocks), load=load))

    def _op(self, meta: KVTierMetadata, req: _Request, load: LoadSpec | None, save_to: int) -> None:
        if save_to:
            req.save_seq = next(self._save_seqs)
        op = RequestOp(
            req_id=req.req_id,
            tokens=None if req.tokens_sent and load is None else req.tokens,
            extras=None if req.tokens_sent and load is None else req.extras,
            blocks_at=req.blocks_sent,
            new_blocks=req.blocks[req.blocks_sent :],
            computed=req.computed,
            load=load,
            save_to=save_to,
            save_seq=req.save_seq if save_to else 0,
        )
        if save_to and self._events_block:
            self._attach_hashes(op, req, save_to)
        meta.ops.append(op)
        req.tokens_sent = True
        req.blocks_sent = len(req.blocks)

    def _attach_hashes(self, op: RequestOp, req: _Request, save_to: int) -> None:
        """KV events: the block hashes of the saved prompt the workers do not have yet. A request
        whose hashes cannot be carried is saved without events (logged once)."""
        hashes = getattr(req.request, "block_hashes", None) or []
        upto = min(len(hashes), save_to // self._events_block)  # type: ignore[operator]
        if upto <= req.hashes_sent:
            return
        try:
            op.block_hashes = events.encode_hashes(hashes[req.hashes_sent : upto])
        except Exception:
            self._log_once(
                "event-hashes",
                "kvtier: vLLM's block hashes of request %s cannot be carried in KV events; its "
                "chunks are not announced (logged once)",
                req.req_id,
                exc=True,
            )  # fmt: skip
            return
        op.hashes_at = req.hashes_sent
        lora = getattr(req.request, "lora_request", None)
        if lora is not None:
            op.lora = (int(lora.lora_int_id), str(lora.lora_name))
        req.hashes_sent = upto

    # ---- cache reset ----------------------------------------------------------------------------

    def reset_cache(self) -> bool:
        """Starts a new cache epoch: from now on every request is keyed under a new random root,
        so nothing stored before can be served after (True); the workers empty their CPU and disk
        tiers with the next step. Remote stores keep the old chunks, which other instances still
        serve among themselves until they reset too (each reset picks its own epoch)."""
        self._root = keys.epoch_root(uuid.uuid4().hex)
        self._clear_local = True
        logger.info("kvtier: cache reset; new requests are keyed in a new epoch")
        return True

    # ---- end of a request -----------------------------------------------------------------------

    def request_finished(self, request: Request) -> bool:
        """True when the workers report the request in ``finished_sending`` before its blocks are
        freed (saves went out of them); the workers are told either way."""
        req = self._live.pop(request.request_id, None)
        if req is None:
            return False
        try:
            self._move(req, Event.FINISHED)
            if req.state is State.FINISHED_SAVING or req.state is State.FINISHED_LOADING:
                self._finishing[req.req_id] = req
            else:  # forgotten; vLLM frees the blocks now, so a load not yet sent is dropped
                self._release_pin(req)
                req.outbox = None
            if req.state is State.FINISHED_LOADING and req.outbox is not None:
                req.outbox.failed = True  # vLLM waits for finished_recving; nothing to load
            delay = req.state is State.FINISHED_SAVING
        except Exception:  # the answer must still match what the workers report
            self._failed("request_finished", req.req_id)
            delay = req.state in (State.SAVING, State.FINISHED_SAVING)
            if delay:  # saves may still read the blocks: hold them until the workers report
                req.state = State.FINISHED_SAVING
                self._finishing[req.req_id] = req
        self._finished[req.req_id] = delay
        return delay

    # ---- worker reports -------------------------------------------------------------------------

    def update_connector_output(self, output: KVConnectorOutput) -> None:
        """Follows this step's transfer reports (the workers' and, inside a MultiConnector, other
        connectors'), right before vLLM acts on them.

        A report vLLM would fail an assertion on is dropped (counted, logged once): a request in
        ``finished_recving`` or ``finished_sending`` that vLLM still runs or has waiting without
        a pending load. Only what is certain from the request's own status is dropped, since
        another connector may report requests kvtier does not follow; the worker side reports
        nothing of the kind by itself (the contract tests check that none is ever dropped).
        """
        try:
            self._publisher.add(getattr(output, "kv_cache_events", None))
        except Exception:
            self._failed("taking KV events", "(all)")
        try:
            self._count_failed_loads(output)
        except Exception:
            self._failed("counting failed loads", "(all)")
        try:
            self._saves_ended(getattr(output, "kv_connector_worker_meta", None))
            output.finished_recving = self._follow(output.finished_recving, Event.RECEIVED)
            output.finished_sending = self._follow(output.finished_sending, Event.SENT)
        except Exception:
            self._failed("update_connector_output", "(all)")

    def _count_failed_loads(self, output: KVConnectorOutput) -> None:
        """Blocks a load could not fill (vLLM recomputes from the first of them on): their tokens
        are counted by the tier they were to come from, so hit tokens minus failed load tokens is
        what kvtier really loaded. vLLM's own cached-token figures keep counting them. A load
        is followed until the step output that reports on it."""
        invalid = getattr(output, "invalid_block_ids", None) or set()
        received = set(getattr(output, "finished_recving", None) or ())
        block = self._block_tokens
        for req in itertools.chain(self._live.values(), self._finishing.values()):
            if req.loading is None:
                continue
            start, end, background = req.loading
            if not background or req.req_id in received:
                req.loading = None  # this output reports on it: counted now or never
            if not invalid or (background and req.req_id not in received):
                continue
            count = self._group_count
            first = next(
                (
                    i
                    for i in range(start // block, min(-(-end // block), len(req.blocks) // count))
                    if any(b in invalid for b in req.blocks[i * count : (i + 1) * count])
                ),
                None,
            )
            if first is None:
                continue
            lost_from = max(start, first * block)
            at = start
            for source in ("cpu", "disk", "remote"):  # the order _count_hit laid them out in
                tokens = req.hit_sources.get(source, 0)
                lost = max(0, min(at + tokens, end) - max(at, lost_from))
                self._stats.count("kvtier_failed_load_tokens", lost, source)
                at += tokens

    def take_events(self) -> Iterable[Any]:
        """KV events of kvtier's tiers that every worker has reported (see
        :mod:`kvtier.vllm.events`)."""
        return self._publisher.take()

    def _saves_ended(self, meta: Any) -> None:
        """Takes the workers' reports of running requests whose saves all ended: once every rank
        has reported the last save sent, the request is back to RUNNING, so it frees its blocks
        as soon as it finishes. A report of an earlier save number changes nothing."""
        if not isinstance(meta, KVTierWorkerMetadata):
            return
        for req_id, ranks in meta.saves_ended.items():
            req = self._live.get(req_id)
            if req is None:
                continue
            for rank, seq in ranks.items():
                req.saves_ended[rank] = max(seq, req.saves_ended.get(rank, 0))
            ended = req.saves_ended
            if (
                req.state is State.SAVING
                and len(ended) >= self._ranks
                and min(ended.values()) >= req.save_seq
            ):
                self._move(req, Event.SAVES_ENDED)

    def _follow(self, reported: Iterable[str] | None, event: Event) -> set[str] | None:
        if not reported:
            return reported  # type: ignore[return-value]
        kept: set[str] = set()
        for req_id in reported:
            req = self._finishing.get(req_id) or self._live.get(req_id)
            if req is not None and _fails_vllm(req.request, event):
                self.dropped_reports += 1
                self._log_once(
                    ("dropped", event),
                    "kvtier: dropped %s for request %s, which vLLM does not expect in status %s "
                    "(logged once)",
                    event.value, req_id, req.request.status.name,
                )  # fmt: skip
                continue
            kept.add(req_id)
            if req is not None:
                self._move(req, event)
        return kept


def _fails_vllm(request: Any, event: Event) -> bool:
    """Whether vLLM 0.32 fails an assertion on ``event`` reported for ``request``: it frees the
    blocks of a finished request only, and takes a finished load only for a request waiting for
    remote KV (or finished while waiting)."""
    if request is None or request.is_finished():
        return False
    return event is Event.SENT or request.status.name != "WAITING_FOR_REMOTE_KVS"
