"""The worker side of the connector: the KV layout, the Java engine, saves and loads per step.

Lives in each vLLM worker process. ``register_kv_caches`` checks the KV tensors' layout and opens
the engine over them; each step's metadata then drives loads (before or during the forward, or in
the background for hits on disk or remote) and saves (after the forward, on Java transfer threads;
vLLM keeps the blocks until the worker reports the request finished).

What vLLM is told, and when (the scheduler side's docstring has the whole contract):

- ``finished_recving`` names a request once per background load the scheduler side sent (so
  confirmed by vLLM, with the request in ``WAITING_FOR_REMOTE_KVS``), when the load has ended,
  loaded or not; the blocks it did not fill are in ``get_block_ids_with_load_errors`` by then. A
  load of a request vLLM preempted is waited for and not reported.
- ``finished_sending`` names a request the metadata said finished with its blocks held
  (``KVTierMetadata.finished``), once no save out of its blocks is running, and never a request
  named in ``finished_recving`` in the same report.
- Blocks are read or written only while vLLM holds them for the request: transfers of a
  preempted request are waited for in ``handle_preemptions``, before the step's forward.
- No method raises: a load that cannot run reports its blocks as load errors, a save that cannot
  run is dropped; both are logged once and counted in ``failures``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kvtier import _bridge, _jvm
from kvtier.engine import Engine, Layout, key_extras
from kvtier.vllm import events
from kvtier.vllm._lookup import socket_path, start_server
from kvtier.vllm.groups import FULL_ATTENTION, KvGroups, classify
from kvtier.vllm.layouts import KvCacheLayout, describe
from kvtier.vllm.metadata import KVTierMetadata, KVTierWorkerMetadata, LoadSpec, RequestOp
from kvtier.vllm.stats import KVTierConnectorStats, Throttle, worker_report

if TYPE_CHECKING:
    import torch
    from vllm.config import VllmConfig

logger = logging.getLogger(__name__)

_LOCAL: dict[str, KVTierWorker] = {}
_LOCAL_LOCK = threading.Lock()

TRANSFER_THREADS = 2
"""Threads that run background saves and loads (``kvtier-transfer-N``)."""

COPY_THREADS = min(4, os.cpu_count() or 1)
"""Threads one whole-chunk save or load splits its layers over (the caller's and the copy pool's):
one thread cannot reach memory bandwidth with the short runs of a paged cache."""

SAVE_WAIT_MILLIS = 60_000
"""How long a preemption or shutdown waits for a request's saves, in milliseconds."""

STATS_INTERVAL_S = 1.0
"""How often at most a worker reads its engine's counters for vLLM's stats in steps that moved
nothing (decode steps): often enough for the lower tiers' background work to show."""


def local_worker(engine_id: str) -> KVTierWorker | None:
    """The worker of ``engine_id`` in this process, once its KV caches are registered."""
    with _LOCAL_LOCK:
        return _LOCAL.get(engine_id)


def detect_layout(kv_caches: dict[str, torch.Tensor], vllm_config: VllmConfig) -> KvCacheLayout:
    """Checks the registered KV tensors against vLLM's geometry and names their layout.

    Raises:
        ValueError: the tensors are not all alike, not on a CPU or CUDA device, or in a layout
            kvtier does not move (the message says what was seen and what is supported).
    """
    model = vllm_config.model_config
    layout = describe(
        kv_caches,
        block_size=int(vllm_config.cache_config.block_size),
        num_heads=int(model.get_num_kv_heads(vllm_config.parallel_config)),
        head_size=int(model.get_head_size()),
        mla=bool(getattr(model, "use_mla", False)),
    )
    if not (layout.device == "cpu" or layout.device.startswith("cuda")):
        raise ValueError(
            f"kvtier: the KV cache is on {layout.device}; kvtier moves KV caches in host memory "
            "(vLLM's CPU backend) or on CUDA GPUs"
        )
    return layout


@dataclass
class _WorkerRequest:
    """What the worker side knows of one request."""

    tokens: Any = None
    """The token ids kvtier keys the request by, as a Java ``int[]`` (converted once per op that
    brings them; None until one does)."""
    token_count: int = 0
    extras: Any = None
    """The tokens' key extras as a Java ``KeyExtras``."""
    blocks: list[int] | None = field(default_factory=list)
    """vLLM's block table for the request as far as the ops told it (None: a gap, so unknown
    until an op replaces it)."""
    saved_chunks: int = 0
    save_seq: int = 0
    """The number of the last save received for the request (``RequestOp.save_seq``)."""
    save_seq_reported: int = 0
    """The last ``save_seq`` reported to the scheduler side as ended."""
    tickets: set[int] = field(default_factory=set)
    """Background saves and loads in flight out of or into the request's blocks."""
    finished: bool | None = None
    """None while live; once finished, whether vLLM waits for it in ``finished_sending``."""
    token_ids: np.ndarray | None = None
    """With KV events on: ``tokens`` as numpy (for the chunks' tags)."""
    hashes: np.ndarray | None = None
    """With KV events on: vLLM's hashes of the request's blocks as far as the ops told them."""
    lora_id: int = 0


@dataclass
class _Ticket:
    """A background save or load in flight."""

    req_id: str
    load: LoadSpec | None = None
    """The load (None: a save)."""
    table: list[int] = field(default_factory=list)
    """The block table the load writes into."""
    report: bool = True
    """A load: vLLM waits for it in ``finished_recving`` (False once the request is preempted)."""


def _start_cpu_warm_up(vllm_config: VllmConfig, config: Any) -> bool:
    """Starts the JVM's warm-up on a background thread for vLLM's CPU attention backend, while
    vLLM allocates its KV cache (seconds) instead of after; False where the layout cannot be known
    yet (GPU workers, MLA, a KV cache dtype other than the model's): those warm up in
    ``register_kv_caches``. Never raises."""
    try:
        from vllm.platforms import current_platform

        model = vllm_config.model_config
        cache = vllm_config.cache_config
        if not current_platform.is_cpu() or model.use_mla or cache.cache_dtype != "auto":
            return False
        import torch

        _bridge.worker.warm_up_cpu_in_background(
            config,
            int(cache.block_size),
            int(model.get_num_kv_heads(vllm_config.parallel_config)),
            int(model.get_head_size()),
            torch.empty((), dtype=model.dtype).element_size(),
            TRANSFER_THREADS,
        )
        return True
    except Exception:  # best effort: register_kv_caches warms up instead
        logger.debug("kvtier: no background warm-up", exc_info=True)
        return False


class KVTierWorker:
    """Worker-side state for one rank. Called from the model runner's thread."""

    def __init__(
        self, vllm_config: VllmConfig, settings: dict[str, Any], kv_cache_config: Any = None
    ) -> None:
        """``kv_cache_config``: vLLM's ``KVCacheConfig`` (its groups are checked when the KV
        cache is registered, where the tensors' shapes are known)."""
        self._vllm_config = vllm_config
        self._settings = settings
        self._kv_cache_config = kv_cache_config
        self._groups = FULL_ATTENTION
        config = _bridge.worker.load_config(settings)
        self._config = config
        self._layerwise = bool(config.useLayerwise())
        self._chunk_tokens = int(config.chunkTokens())
        self._engine_id = str(vllm_config.kv_transfer_config.engine_id)
        self._engine: Engine | None = None
        self._worker: Any = None
        self._server: Any = None
        self._layer_index: dict[str, int] = {}
        self._block_size = 0
        self._rank = 0
        self._requests: dict[str, _WorkerRequest] = {}
        self._tickets: dict[int, _Ticket] = {}
        self._sync_loads: list[tuple[str, int, LoadSpec, list[int]]] = []
        """Layerwise loads of this step: (request, handle or 0 once failed, load, table)."""
        self._layer_saves: list[tuple[str, int, int]] = []
        self._pending_saves: list[tuple[str, int]] = []
        self._load_errors: set[int] = set()
        self._finished_recving: set[str] = set()
        self._failed_recving: set[str] = set()
        self._logged: set[str] = set()
        self.failures = 0
        """Failures turned into failed loads or dropped saves (for tests and stats)."""
        self._meta: KVTierMetadata | None = None
        self._preempted = 0
        self._gpu: Any = None
        self._cuda_context: Any = None
        self._unregistered = False
        """Between ``unregister_kv_caches`` and ``restore_kv_caches``: the KV tensors' memory may
        be released, so nothing is copied into or out of it."""
        self.unregistered_misses = 0
        """Loads failed and saves dropped because the KV cache was unregistered (for stats)."""
        self.warming_up = _start_cpu_warm_up(vllm_config, config)
        """Whether a background warm-up was started (CPU workers)."""
        self._tiers = _tiers(config)
        self._bytes_per_token = 0
        self._stats_before: dict[str, int] = {}
        self._stats_changed = False
        """Whether loads or saves ran or ended since the last report to vLLM."""
        self._stats_throttle = Throttle(STATS_INTERVAL_S)
        self._events_block = (
            events.hash_block_size(vllm_config, self._chunk_tokens)
            if events.enabled(vllm_config)
            else None
        )
        """Tokens per vLLM block hash while KV events are on (None: off)."""
        self._events: Any = None
        """The core's ``ChunkEvents`` once the engine is open, with events on."""
        self._lora_names: dict[int, str] = {}

    @property
    def groups(self) -> KvGroups:
        """vLLM's KV cache groups as kvtier serves them (known once the KV cache is
        registered)."""
        return self._groups

    # ---- set-up -----------------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        """Opens the engine over vLLM's KV tensors and starts serving lookups."""
        began = time.perf_counter()
        shapes = {name: tuple(t.shape) for name, t in kv_caches.items()}
        self._groups = kv_groups = classify(self._kv_cache_config, shapes)
        layout = detect_layout(kv_caches, self._vllm_config)
        names = list(kv_caches)
        self._layer_index = {n: i for i, n in enumerate(names)}
        self._block_size = layout.block_size
        groups = _bridge.worker.cache_groups(
            kv_groups.layer_groups(
                names, _kv_sharing(self._vllm_config, names) if kv_groups.count > 1 else None
            ),
            kv_groups.windows(),
        )
        paged = layout.paged_layout()
        parallel = self._vllm_config.parallel_config
        rank = self._rank = _rank()
        engine_layout = Layout(
            model_id=str(self._vllm_config.model_config.model),
            kv_dtype=layout.dtype,
            num_layers=len(names),
            kv_heads_per_rank=layout.num_heads,
            head_size=layout.head_size,
            bytes_per_token=(bytes_per_token := len(names) * int(paged.tokenBytes())),
            tp_size=int(parallel.tensor_parallel_size),
            tp_rank=rank % int(parallel.tensor_parallel_size),
            mla=layout.mla,
            chunk_order=str(paged.chunkOrder()),
            first_layer=_first_layer(names) if _pp_size(parallel) > 1 else 0,
            # MLA: one copy for every rank; the first rank sends it, the others read it.
            writes_remote=not layout.mla or rank % int(parallel.tensor_parallel_size) == 0,
            kv_groups=str(groups.describe()),
        )
        addresses = _jvm.long_array(
            np.array([t.data_ptr() for t in kv_caches.values()], dtype=np.int64)
        )
        world = int(getattr(parallel, "world_size", 1))
        self._settings = rank_settings(self._settings, self._config, world)
        if layout.device == "cpu":
            self._engine = Engine(engine_layout, self._settings)
            cache = _bridge.worker.host_kv_cache(addresses, paged, COPY_THREADS)
            # The first requests would otherwise pay for class loading and the first JIT
            # compilations of the save and load paths (once per process; scratch memory only).
            # Usually started in __init__ and running or done by now: then this returns at once.
            if not self.warming_up:
                _bridge.worker.warm_up(self._engine.java.config(), paged, TRANSFER_THREADS)
        else:
            cache = self._open_gpu(layout, engine_layout, addresses, paged)
        self._worker = _bridge.worker.open_worker(
            self._engine.java, cache, TRANSFER_THREADS, groups
        )
        if self._events_block:
            self._events = self._engine.java.enableEvents(events.MAX_QUEUED, events.MAX_UNHELD_TAGS)
        self._server = start_server(self._engine, socket_path(self._engine_id, rank))
        self._bytes_per_token = bytes_per_token
        # The first report counts from here, but with the failures the tiers met while opening
        # (partial files of a killed process, corrupt files, a directory that cannot be listed).
        self._stats_before = {k: v for k, v in self.stats().items() if "_error" not in k}
        with _LOCAL_LOCK:
            _LOCAL[self._engine_id] = self
        logger.info(
            "kvtier: %d layers (%s), %s layout on %s, %d blocks of %d tokens, %s, chunks of %d "
            "tokens; KV cache registered in %.0f ms",
            len(names), groups, layout.kind, layout.device, layout.num_blocks, layout.block_size,
            layout.dtype, self._chunk_tokens, (time.perf_counter() - began) * 1e3,
        )  # fmt: skip
        for line in _tier_lines(self._config, self._chunk_tokens * bytes_per_token, rank):
            logger.info("kvtier: %s", line)

    def _open_gpu(
        self, layout: KvCacheLayout, engine_layout: Layout, addresses: Any, paged: Any
    ) -> Any:
        """The engine with pinned CPU-tier memory, and the kernels' view of the GPU KV cache."""
        import torch

        device = torch.device(layout.device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        bridge = _bridge.worker
        self._cuda_context = bridge.cuda_context(index)
        pinned = bridge.pinned_allocator(self._cuda_context)
        self._engine = Engine(engine_layout, self._settings, allocator=pinned)
        self._gpu = bridge.gpu_kv_cache(
            self._cuda_context, addresses, paged, pinned,
            str(self._config.gpuSaveMode()), str(self._config.gpuLoadMode()),
        )  # fmt: skip
        return self._gpu.java

    def _fence(self) -> None:
        """GPU: copies started from now on wait for the work vLLM has enqueued so far."""
        if self._gpu is not None:
            import torch

            self._gpu.recordFence(int(torch.cuda.current_stream().cuda_stream))

    def _order_compute(self) -> None:
        """GPU: vLLM's stream waits for the copies this thread has started into blocks."""
        if self._gpu is not None:
            import torch

            self._gpu.orderBeforeCompute(int(torch.cuda.current_stream().cuda_stream))

    def lookup(
        self, pin: int, tokens: np.ndarray, extras: np.ndarray | None = None
    ) -> tuple[int, int, bool, bool, int]:
        """In-process lookup (scheduler in this process), pinning the hit under ``pin``:
        (hit, hit in memory, storing, remote answer pending, hit in this process's tiers). Never
        waits on the network.

        Raises:
            kvtier.JavaError: the engine failed (the scheduler counts a miss).
        """
        assert self._engine is not None
        return self._engine.lookup_and_pin_tiers(pin, tokens, extras)

    def _failed(self, where: str, req_id: str) -> None:
        """Counts and logs (once per place) an exception caught in ``where``."""
        self.failures += 1
        if where not in self._logged:
            self._logged.add(where)
            logger.warning(
                "kvtier: %s failed for request %s; its loads recompute and its saves are "
                "dropped (logged once)", where, req_id, exc_info=True,
            )  # fmt: skip

    def _unpin(self, pin: int) -> None:
        if pin:
            try:
                self._engine.unpin(pin)  # type: ignore[union-attr]
            except Exception:  # the engine's pin timeout releases it
                self._failed("unpin", str(pin))

    # ---- per step ---------------------------------------------------------------------------

    def bind(self, meta: KVTierMetadata) -> None:
        """Applies a step's metadata: pins to drop, finished requests, block tables, loads (those
        from memory complete here, before the forward), saves for the end of the step."""
        if self._worker is None or meta is self._meta:
            return
        self._meta = meta
        self._stats_changed |= bool(meta.ops)
        for pin in meta.unpin:
            self._unpin(pin)
        if meta.clear_local:
            try:
                removed = self._engine.clear_local()  # type: ignore[union-attr]
                logger.info("kvtier: cache reset; %d chunks removed from CPU and disk", removed)
            except Exception:  # the new epoch's keys already keep old chunks from being served
                self._failed("emptying the local tiers", "(all)")
        for req_id, report in meta.finished.items():
            req = self._requests.get(req_id)
            if req is None and report:
                req = self._requests[req_id] = _WorkerRequest(blocks=None)
            if req is not None:
                req.finished = report
        if any(op.load is not None and not op.load.failed for op in meta.ops):
            try:
                self._fence()
            except Exception:
                self._failed("ordering loads after the step's work", "(all)")
        if self._unregistered:
            self._refuse_while_unregistered(meta)
            return
        for op in meta.ops:
            try:
                req = self._apply(op)
            except Exception:  # a load vLLM counts on is reported as failed
                self._failed("applying a step", op.req_id)
                if op.load is not None:
                    load = op.load
                    self._load_ended(op.req_id, load, op.new_blocks, load.start, load.background)
                continue
            if op.load is not None:
                self._start_load(op.req_id, req, op.load)

    def _apply(self, op: RequestOp) -> _WorkerRequest:
        """The op's tokens, block table and save; returns the request's state."""
        req = self._requests.get(op.req_id)
        if req is None:
            req = self._requests[op.req_id] = _WorkerRequest()
        if op.tokens is not None:
            req.tokens, req.token_count = _jvm.int_array(op.tokens), len(op.tokens)
            req.extras = key_extras(op.extras)
            if self._events is not None:
                req.token_ids = op.tokens
        if op.block_hashes is not None:
            kept = req.hashes[: op.hashes_at] if req.hashes is not None else None
            if op.hashes_at == 0 or (kept is not None and len(kept) == op.hashes_at):
                req.hashes = (
                    op.block_hashes if not op.hashes_at else np.concatenate([kept, op.block_hashes])
                )
            else:  # a gap: this request's chunks go unannounced until hashes start over
                req.hashes = None
        if op.lora is not None:
            req.lora_id = op.lora[0]
            self._lora_names[op.lora[0]] = op.lora[1]
        if op.blocks_at == 0:
            req.blocks = list(op.new_blocks)
        elif req.blocks is not None and op.blocks_at <= len(req.blocks):
            del req.blocks[op.blocks_at :]
            req.blocks.extend(op.new_blocks)
        else:  # a table with a gap would put ids at the wrong tokens: unknown until replaced
            req.blocks = None
        if op.computed and req.blocks is not None and self._groups.sliding:
            self._forget_slid_out(req.blocks, op.computed)
        if op.save_to > 0:
            req.save_seq = max(req.save_seq, op.save_seq)
            if req.tokens is not None and req.blocks is not None:
                self._pending_saves.append((op.req_id, op.save_to))
        return req

    def _forget_slid_out(self, table: list[int], computed: int) -> None:
        """Puts vLLM's null block (0) in ``table`` where a sliding group's blocks lie wholly
        before the window of the request's next token, once ``computed`` tokens are computed:
        vLLM may have freed those and handed them to another request, so a save must not read
        them (the core stops a save before a chunk whose window holds a null block)."""
        count = self._groups.count
        for group, window in self._groups.sliding_windows():
            freed = max(0, computed - window + 1) // self._block_size
            for i in range(group, min(freed * count, len(table)), count):
                table[i] = 0

    def _start_load(self, req_id: str, req: _WorkerRequest, load: LoadSpec) -> None:
        """Starts (or, from memory and not layer by layer, runs) a load; one that cannot start
        ends at once as failed."""
        table = list(req.blocks or ())
        if load.failed or req.tokens is None:
            self._load_ended(req_id, load, table, load.start, load.background)
            return
        args = (req.tokens, load.stored, req.extras, _int_array(table), load.start, load.end)
        try:
            if load.background:
                ticket = int(self._worker.submitLoad(*args))
                self._track(ticket, _Ticket(req_id, load, table))
            elif self._layerwise:
                self._sync_loads.append((req_id, int(self._worker.beginLoad(*args)), load, table))
            else:
                self._load_ended(req_id, load, table, int(self._worker.load(*args)), False)
        except Exception:  # its blocks are recomputed
            self._failed("starting a load", req_id)
            self._load_ended(req_id, load, table, load.start, load.background)

    def _track(self, ticket: int, info: _Ticket) -> None:
        self._tickets[ticket] = info
        req = self._requests.get(info.req_id)
        if req is not None:
            req.tickets.add(ticket)

    def _load_ended(
        self, req_id: str, load: LoadSpec, table: list[int], end: int, report: bool
    ) -> None:
        """Records a load that ended at ``end``: releases its pins, reports the blocks it did not
        fill as load errors and, for a background load vLLM waits for, finishes receiving."""
        self._unpin(load.pin)
        if end < load.end:
            bs, count = self._block_size, self._groups.count
            first, last = end // bs, (load.end + bs - 1) // bs
            if last * count <= len(table):
                # Every group's blocks of those tokens (vLLM's null block is no request's).
                self._load_errors.update(b for b in table[first * count : last * count] if b)
            elif report:  # blocks unknown: the whole request recomputes
                self._failed_recving.add(req_id)
            else:
                logger.error(
                    "kvtier: a load for %s failed and its blocks are unknown", req_id
                )  # pragma: no cover - the scheduler side sends every load with its table
            logger.debug("kvtier: %s loaded %d of %d tokens", req_id, end, load.end)
        if report:
            self._finished_recving.add(req_id)

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Layerwise loads: copies this layer of every load of the step."""
        layer = self._layer_index.get(layer_name)
        if layer is None or not self._sync_loads:
            return
        for i, (req_id, handle, load, table) in enumerate(self._sync_loads):
            if handle == 0:
                continue
            try:
                self._worker.loadLayer(handle, layer)
            except Exception:  # the load ends as failed, its blocks recompute
                self._failed("loading a layer", req_id)
                self._end_load(handle, req_id)
                self._sync_loads[i] = (req_id, 0, load, table)
                self._load_ended(req_id, load, table, load.start, False)
        try:
            self._order_compute()
        except Exception:
            self._failed("ordering the forward after loads", "(all)")
        if layer == len(self._layer_index) - 1:
            self._end_layer_loads()

    def _end_load(self, handle: int, req_id: str) -> int | None:
        try:
            return int(self._worker.endLoad(handle))
        except Exception:
            self._failed("ending a load", req_id)
            return None

    def _end_layer_loads(self, complete: bool = True) -> None:
        """Ends the step's layerwise loads; without ``complete`` (the forward did not ask for
        every layer) their tokens are reported as load errors."""
        loads, self._sync_loads = self._sync_loads, []
        for req_id, handle, load, table in loads:
            if handle != 0:
                end = self._end_load(handle, req_id)
                if end is None or not complete:
                    end = load.start
                self._load_ended(req_id, load, table, end, False)

    def save_kv_layer(self, layer_name: str) -> None:
        """Layerwise saves: copies this layer of every save of the step as soon as it is written."""
        layer = self._layer_index.get(layer_name)
        if layer is None or not self._layerwise:
            return
        if layer == 0:
            for req_id, save_to in self._take_saves():
                req = self._requests[req_id]
                try:
                    handle = int(
                        self._worker.beginSave(
                            req.tokens,
                            save_to,
                            req.extras,
                            _int_array(req.blocks),
                            req.saved_chunks,
                            self._tags(req, save_to),
                        )
                    )
                except Exception:  # the save is dropped
                    self._failed("starting a save", req_id)
                    continue
                req.saved_chunks = save_to // self._chunk_tokens
                if handle != 0:
                    self._layer_saves.append((req_id, handle, save_to))
        if not self._layer_saves:
            return
        try:
            self._fence()
            for _, handle, _ in self._layer_saves:
                self._worker.saveLayer(handle, layer)
        except Exception:  # the step's layer saves are discarded
            self._failed("saving a layer", self._layer_saves[0][0])
            saves, self._layer_saves = self._layer_saves, []
            for req_id, handle, _ in saves:
                self._end_save(handle, req_id, False)

    def _end_save(self, handle: int, req_id: str, ok: bool) -> None:
        try:
            self._worker.endSave(handle, ok)
        except Exception:
            self._failed("ending a save", req_id)

    def wait_for_save(self) -> None:
        """Ends the step: layerwise saves become visible; whole saves go to transfer threads."""
        if self._worker is None:
            return
        if self._sync_loads:  # a step whose forward never reached the last layer
            self._end_layer_loads(complete=False)
        saves, self._layer_saves = self._layer_saves, []
        for req_id, handle, _ in saves:
            self._end_save(handle, req_id, True)
        whole = self._take_saves()
        if whole:
            try:
                self._fence()
            except Exception:  # saves would not be ordered after the forward
                self._failed("ordering saves after the forward", whole[0][0])
                return
        # A sliding-window model's saves are copied now: vLLM may hand the blocks that slid out
        # of the window to other requests in the next step (kvtier.vllm.groups).
        submit = self._worker.save if self._groups.sliding else self._worker.submitSave
        for req_id, save_to in whole:
            req = self._requests[req_id]
            try:
                ticket_or_stored = int(
                    submit(
                        req.tokens,
                        save_to,
                        req.extras,
                        _int_array(req.blocks),
                        req.saved_chunks,
                        self._tags(req, save_to),
                    )
                )
            except Exception:  # the save is dropped
                self._failed("saving", req_id)
                continue
            req.saved_chunks = save_to // self._chunk_tokens
            if not self._groups.sliding:  # else it ended: chunks stored
                self._track(ticket_or_stored, _Ticket(req_id))

    def _tags(self, req: _WorkerRequest, save_to: int) -> Any:
        """KV events: the tags of the chunks a save stores (None: events off or no hashes)."""
        if self._events is None or req.hashes is None or req.token_ids is None:
            return None
        try:
            tags = events.chunk_tags(
                req.token_ids,
                req.hashes,
                req.saved_chunks,
                min(save_to, len(req.token_ids)),
                self._chunk_tokens,
                self._events_block,  # type: ignore[arg-type]
                req.lora_id,
            )
            return _jvm.long_arrays(tags)
        except Exception:  # the save goes on; its chunks are not announced
            self._failed("tagging a save for KV events", "(events)")
            return None

    def get_kv_connector_kv_cache_events(self) -> events.KVTierKVEvents | None:
        """The KV events of this rank's CPU and disk tiers since the last step."""
        if self._events is None:
            return None
        try:
            packed = np.asarray(self._events.drain(), dtype=np.int64)
        except Exception:
            self._failed("draining KV events", "(events)")
            return None
        if not len(packed):
            return None
        return events.KVTierKVEvents(
            events.decode(packed, self._events_block, self._lora_names)  # type: ignore[arg-type]
        )

    def _take_saves(self) -> list[tuple[str, int]]:
        saves, self._pending_saves = self._pending_saves, []
        return [
            (r, s)
            for r, s in saves
            if (req := self._requests.get(r)) is not None and req.blocks is not None
        ]

    def _refuse_while_unregistered(self, meta: KVTierMetadata) -> None:
        """A step while the KV cache is unregistered: its loads end as failed (vLLM recomputes
        their blocks) and its saves are dropped, each counted; nothing is copied."""
        for op in meta.ops:
            req = self._requests.setdefault(op.req_id, _WorkerRequest())
            req.blocks = None  # unknown until an op replaces the table after restore
            if op.load is not None:
                self.unregistered_misses += 1
                load = op.load
                self._load_ended(op.req_id, load, list(op.new_blocks), load.start, load.background)
            elif op.save_to > 0:
                self.unregistered_misses += 1
        if meta.ops and "unregistered" not in self._logged:
            self._logged.add("unregistered")
            logger.warning(
                "kvtier: a step ran while the KV cache was unregistered; its loads are "
                "recomputed and its saves dropped (counted; logged once)"
            )

    def unregister_kv_caches(self) -> None:
        """Before vLLM releases or remaps the KV tensors' memory (sleep, discard, a weight update
        that borrows the KV cache's memory): waits, bounded, for every copy into or out of them,
        then copies nothing until :meth:`restore_kv_caches`. Idempotent."""
        if self._worker is None or self._unregistered:
            return
        self._unregistered = True
        tickets = list(self._tickets)
        if self._layer_saves or self._sync_loads:  # a step cut short: end what it started
            self._end_layer_loads(complete=False)
            saves, self._layer_saves = self._layer_saves, []
            for req_id, handle, _ in saves:
                self._end_save(handle, req_id, False)
        self._pending_saves = []
        if not tickets:
            return
        try:
            done = self._worker.awaitTickets(_jvm.long_array(np.array(tickets)), SAVE_WAIT_MILLIS)
        except Exception:
            self._failed("waiting for transfers before unregistering", "(all)")
            return
        if not done:
            logger.warning(
                "kvtier: transfers into or out of the KV cache still running %d ms after vLLM "
                "unregistered it", SAVE_WAIT_MILLIS,
            )  # fmt: skip

    def restore_kv_caches(self) -> None:
        """After vLLM backs the KV tensors again, at the same addresses (sleep mode and the
        extensible KV cache keep their virtual address reservations): copies resume. Their
        contents were discarded; kvtier's stored chunks are copies and stay valid. Idempotent."""
        self._unregistered = False

    def handle_preemptions(self, meta: KVTierMetadata) -> None:
        """Before vLLM reuses preempted requests' blocks: waits for the transfers out of or into
        them and forgets their block tables; a background load of one is no longer reported."""
        if self._worker is None:
            return
        self._preempted += len(meta.preempted)
        tickets: list[int] = []
        for req_id in meta.preempted:
            req = self._requests.get(req_id)
            if req is None:
                continue
            for t in req.tickets:
                tickets.append(t)
                if (info := self._tickets.get(t)) is not None:
                    info.report = False
            req.blocks = []
        if not tickets:
            return
        try:
            done = self._worker.awaitTickets(_jvm.long_array(np.array(tickets)), SAVE_WAIT_MILLIS)
        except Exception:
            self._failed("waiting for transfers of preempted requests", meta.preempted[0])
            return
        if not done:
            logger.warning(
                "kvtier: transfers of preempted requests still running after %d ms",
                SAVE_WAIT_MILLIS,
            )

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        """Finished requests whose block freeing vLLM deferred and whose transfers have ended
        (``finished_sending``), and background loads that ended (``finished_recving``)."""
        sending, recving, _ = self.get_transfer_results(finished_req_ids)
        return sending or None, recving or None

    def get_transfer_results(
        self, finished_req_ids: set[str]
    ) -> tuple[set[str], set[str], set[str]]:
        """Like :meth:`get_finished`, also naming background loads that failed with blocks it
        cannot name (``failed_recving``: vLLM recomputes those requests whole)."""
        if self._worker is None:
            return set(), set(), set()
        try:
            done = self._worker.drainCompleted()
        except Exception:  # completions stay queued for the next step
            self._failed("collecting finished transfers", "(all)")
            done = ()
        self._stats_changed |= len(done) > 0
        for i in range(0, len(done), 2):
            ticket, result = int(done[i]), int(done[i + 1])
            info = self._tickets.pop(ticket, None)
            if info is None:
                continue
            req = self._requests.get(info.req_id)
            if req is not None:
                req.tickets.discard(ticket)
            if info.load is not None:
                self._load_ended(info.req_id, info.load, info.table, result, info.report)
        for req_id in finished_req_ids or ():
            req = self._requests.get(req_id)
            if req is not None and req.finished is None:
                req.finished = False  # the scheduler side kept no blocks for it
        recving, self._finished_recving = self._finished_recving, set()
        failed, self._failed_recving = self._failed_recving, set()
        sending: set[str] = set()
        for req_id, req in list(self._requests.items()):
            if req.finished is not None and not req.tickets:
                del self._requests[req_id]
                # vLLM frees a request that waited for a load at finished_recving; a second
                # report for it would name a request vLLM no longer has.
                if req.finished and req_id not in recving:
                    sending.add(req_id)
        return sending, recving, failed & recving

    def build_connector_worker_meta(self) -> KVTierWorkerMetadata | None:
        """Running requests whose saves have all ended on this rank since the last report: none
        of their transfers is in flight, none of their saves waits for the end of a step. The
        scheduler side lets vLLM free such a request's blocks as soon as it finishes."""
        if self._worker is None:
            return None
        busy = {r for r, _ in self._pending_saves} | {r for r, _, _ in self._layer_saves}
        rank = self._rank
        ended: dict[str, dict[int, int]] = {}
        for req_id, req in self._requests.items():
            if (
                req.finished is None
                and req.save_seq > req.save_seq_reported
                and not req.tickets
                and req_id not in busy
            ):
                ended[req_id] = {rank: req.save_seq}
                req.save_seq_reported = req.save_seq
        return KVTierWorkerMetadata(ended) if ended else None

    def get_block_ids_with_load_errors(self) -> set[int]:
        """Blocks whose load failed since the last call (vLLM recomputes them)."""
        errors, self._load_errors = self._load_errors, set()
        return errors

    def stats(self) -> dict[str, int]:
        """The engine's and the worker's counters."""
        if self._engine is None:
            return {}
        names = _bridge.worker.worker_stat_names()
        out = self._engine.stats()
        out.update(zip(names, (int(v) for v in self._worker.stats()), strict=True))
        out["preempted_requests"] = self._preempted
        out["connector_failures"] = self.failures
        out["unregistered_misses"] = self.unregistered_misses
        if self._events is not None:
            out["kv_events_dropped"] = int(self._events.dropped())
        return out

    def get_kv_connector_stats(self) -> KVTierConnectorStats | None:
        """What changed since the last report (:func:`kvtier.vllm.stats.worker_report`): after a
        step that loaded or saved, or whose transfers ended, and otherwise at most every
        :data:`STATS_INTERVAL_S` (the lower tiers change in the background); None when nothing
        is due."""
        if self._worker is None:
            return None
        if not self._stats_throttle.due(force=self._stats_changed):
            return None
        self._stats_changed = False
        now = self.stats()
        saves, loads = self._worker.drainLatencies()
        report = worker_report(
            self._stats_before, now, np.asarray(saves), np.asarray(loads),
            rank=self._rank, bytes_per_token=self._bytes_per_token, tiers=self._tiers,
        )  # fmt: skip
        self._stats_before = now
        return None if report.is_empty() else report

    def shutdown(self) -> None:
        """Stops serving lookups, finishes transfers, closes the engine. Idempotent."""
        with _LOCAL_LOCK:
            if _LOCAL.get(self._engine_id) is self:
                del _LOCAL[self._engine_id]
        if not _jvm.running():  # interpreter exit: the JVM already released everything
            self._server = self._worker = self._engine = self._gpu = self._cuda_context = None
            return
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        if self._gpu is not None:
            self._gpu.close()
            self._gpu = None
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self._cuda_context is not None:
            self._cuda_context.close()
            self._cuda_context = None


def _kv_sharing(vllm_config: VllmConfig, names: list[str]) -> dict[str, str]:
    """Layers of ``names`` that read another layer's KV cache (vLLM's cross-layer KV sharing, as
    Gemma 3n does), with the layer each reads."""
    compilation = getattr(vllm_config, "compilation_config", None)
    context = getattr(compilation, "static_forward_context", None) or {}
    shared = {}
    for name in names:
        target = getattr(context.get(name), "kv_sharing_target_layer_name", None)
        if target:
            shared[name] = str(target)
    return shared


def _pp_size(parallel: Any) -> int:
    return int(getattr(parallel, "pipeline_parallel_size", 1))


def _first_layer(names: list[str]) -> int:
    """The model's index of the first of this rank's attention layers (a pipeline stage's
    first), read from vLLM's layer names (``model.layers.<i>.self_attn.attn``)."""
    from vllm.model_executor.models.utils import extract_layer_index

    return min(extract_layer_index(n) for n in names)


def rank_settings(settings: dict[str, Any], config: Any, world_size: int) -> dict[str, Any]:
    """``settings`` for one of ``world_size`` ranks: ``max_local_disk_size`` is the instance's
    budget (as in LMCache), so each rank gets its share."""
    total = int(config.maxLocalDiskBytes())
    if world_size <= 1 or total == 0:
        return settings
    share = total // world_size
    return {**settings, "max_local_disk_size": f"{share / 2**30:.12f}"}


def _int_array(ids: list[int] | None) -> Any:
    return _jvm.int_array(np.asarray(ids or (), dtype=np.int32))


def _tier_lines(config: Any, chunk_bytes: int, rank: int) -> list[str]:
    """One line per tier of this rank: its size, how many of this model's chunks that is, where
    its data goes (a remote store's address without its password)."""
    from kvtier import _redact

    def size(n: int) -> str:
        return f"{n / 2**30:.2f} GiB ({n // chunk_bytes} chunks of {chunk_bytes / 2**20:.1f} MiB)"

    lines = []
    if bool(config.localCpu()):
        lines.append(f"rank {rank} CPU tier: {size(int(config.maxLocalCpuBytes()))} in memory")
    paths = [str(p) for p in config.localDiskPaths()]
    if paths:
        lines.append(
            f"rank {rank} disk tier: {size(int(config.maxLocalDiskBytes()))} in " + ", ".join(paths)
        )
    if config.remoteUrl() is not None:
        lines.append(f"rank {rank} remote tier: {_redact.text(str(config.remoteUrl()))}")
    return lines


def _tiers(config: Any) -> tuple[str, ...]:
    """The tiers ``config`` sets up, by the names the stats use."""
    tiers = ("cpu",) if bool(config.localCpu()) else ()
    if len(config.localDiskPaths()) > 0:
        tiers += ("disk",)
    if config.remoteUrl() is not None:
        tiers += ("remote",)
    return tiers


def _rank() -> int:
    """This worker's rank within its engine (0 without a distributed setup)."""
    try:
        from vllm.distributed.parallel_state import get_world_group

        return int(get_world_group().rank_in_group)
    except (ImportError, AssertionError, AttributeError):
        return 0
