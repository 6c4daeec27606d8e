"""The worker side of the connector: the KV layout, the Java engine, saves and loads per step.

Lives in each vLLM worker process. ``register_kv_caches`` checks the KV tensors' layout and opens
the engine over them; each step's metadata then drives loads (before or during the forward, or in
the background for hits on disk or remote) and saves (after the forward, on Java transfer threads;
vLLM keeps the blocks until the worker reports the request finished).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kvtier import _jvm
from kvtier.engine import Engine, Layout
from kvtier.vllm._lookup import socket_path, start_server
from kvtier.vllm.layouts import KvCacheLayout, describe
from kvtier.vllm.metadata import KVTierMetadata, LoadSpec

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
    """What the worker side knows of one live request."""

    java_id: int
    tokens: Any
    """The prompt as a Java ``int[]`` (converted once)."""
    token_count: int
    blocks: list[int] = field(default_factory=list)
    saved_chunks: int = 0
    reports_finish: bool = False
    finished: bool = False
    tickets: set[int] = field(default_factory=set)


class KVTierWorker:
    """Worker-side state for one rank. Called from the model runner's thread."""

    def __init__(self, vllm_config: VllmConfig, settings: dict[str, Any]) -> None:
        self._vllm_config = vllm_config
        self._settings = settings
        config = _jvm.java_class("io.kvtier.config.KvTierConfig").load(settings)
        self._config = config
        self._layerwise = bool(config.useLayerwise())
        self._chunk_tokens = int(config.chunkTokens())
        self._engine_id = str(vllm_config.kv_transfer_config.engine_id)
        self._engine: Engine | None = None
        self._worker: Any = None
        self._server: Any = None
        self._layer_index: dict[str, int] = {}
        self._block_size = 0
        self._requests: dict[str, _WorkerRequest] = {}
        self._tickets: dict[int, tuple[str, str, LoadSpec | None]] = {}
        self._sync_loads: list[tuple[str, int, LoadSpec]] = []
        self._layer_saves: list[tuple[str, int, int]] = []
        self._pending_saves: list[tuple[str, int]] = []
        self._load_errors: set[int] = set()
        self._finished_recving: set[str] = set()
        self._meta: KVTierMetadata | None = None
        self._preempted = 0
        self._gpu: Any = None
        self._cuda_context: Any = None

    # ---- set-up -----------------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        """Opens the engine over vLLM's KV tensors and starts serving lookups."""
        layout = detect_layout(kv_caches, self._vllm_config)
        names = list(kv_caches)
        self._layer_index = {n: i for i, n in enumerate(names)}
        self._block_size = layout.block_size
        paged = layout.paged_layout()
        parallel = self._vllm_config.parallel_config
        rank = _rank()
        engine_layout = Layout(
            model_id=str(self._vllm_config.model_config.model),
            kv_dtype=layout.dtype,
            num_layers=len(names),
            kv_heads_per_rank=layout.num_heads,
            head_size=layout.head_size,
            bytes_per_token=len(names) * int(paged.tokenBytes()),
            tp_size=int(parallel.tensor_parallel_size),
            tp_rank=rank % int(parallel.tensor_parallel_size),
            mla=layout.mla,
            chunk_order=str(paged.chunkOrder()),
        )
        addresses = _jvm.long_array(
            np.array([t.data_ptr() for t in kv_caches.values()], dtype=np.int64)
        )
        if layout.device == "cpu":
            self._engine = Engine(engine_layout, self._settings)
            cache = _jvm.java_class("io.kvtier.transfer.PagedKvCache").ofAddresses(
                addresses, paged, COPY_THREADS
            )
        else:
            cache = self._open_gpu(layout, engine_layout, addresses, paged)
        self._worker = _jvm.new(
            "io.kvtier.engine.KvWorker", self._engine.java, cache, TRANSFER_THREADS
        )
        self._server = start_server(self._engine, socket_path(self._engine_id, rank))
        with _LOCAL_LOCK:
            _LOCAL[self._engine_id] = self
        logger.info(
            "kvtier: %d layers, %s layout on %s, %d blocks of %d tokens, %s, chunks of %d tokens",
            len(names), layout.kind, layout.device, layout.num_blocks, layout.block_size,
            layout.dtype, self._chunk_tokens,
        )  # fmt: skip

    def _open_gpu(
        self, layout: KvCacheLayout, engine_layout: Layout, addresses: Any, paged: Any
    ) -> Any:
        """The engine with pinned CPU-tier memory, and the kernels' view of the GPU KV cache."""
        import torch

        device = torch.device(layout.device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        cuda = "io.kvtier.cuda."
        self._cuda_context = _jvm.java_class(cuda + "CudaContext").primary(index)
        pinned = _jvm.new(cuda + "PinnedHostAllocator", self._cuda_context).java
        self._engine = Engine(engine_layout, self._settings, allocator=pinned)
        mode = _jvm.java_class(cuda + "GpuKvCache$Mode")
        self._gpu = _jvm.new(
            cuda + "GpuKvCache", self._cuda_context, addresses, paged, pinned,
            mode.parse(self._config.gpuSaveMode()), mode.parse(self._config.gpuLoadMode()),
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

    def lookup(self, java_id: int, tokens: np.ndarray) -> tuple[int, int, bool]:
        """In-process lookup (scheduler in this process): (hit, hit in memory, storing)."""
        assert self._engine is not None
        return self._engine.lookup_and_pin_tiers(java_id, tokens)

    # ---- per step ---------------------------------------------------------------------------

    def bind(self, meta: KVTierMetadata) -> None:
        """Applies a step's metadata: request state, pins to drop, loads to start."""
        if self._worker is None or meta is self._meta:
            return
        self._meta = meta
        if any(op.load is not None for op in meta.ops):
            self._fence()
        for java_id in meta.unpin:
            self._engine.unpin(java_id)  # type: ignore[union-attr]
        for op in meta.ops:
            req = self._requests.get(op.req_id)
            if req is None:
                if op.tokens is None:
                    continue  # state dropped (e.g. a failed start); its ops are ignored
                req = _WorkerRequest(op.java_id, _jvm.int_array(op.tokens), len(op.tokens))
                self._requests[op.req_id] = req
            if op.blocks_at == 0:
                req.blocks = list(op.new_blocks)
            else:
                del req.blocks[op.blocks_at :]
                req.blocks.extend(op.new_blocks)
            req.reports_finish |= op.reports_finish
            if op.load is not None:
                if op.load.background:
                    ticket = int(
                        self._worker.submitLoad(
                            req.tokens, op.load.stored, self._table(req), op.load.start,
                            op.load.end,
                        )
                    )  # fmt: skip
                    self._track(ticket, op.req_id, "load", op.load)
                elif self._layerwise:
                    handle = self._worker.beginLoad(
                        req.tokens, op.load.stored, self._table(req), op.load.start, op.load.end
                    )
                    self._sync_loads.append((op.req_id, int(handle), op.load))
                else:
                    end = int(
                        self._worker.load(
                            req.tokens, op.load.stored, self._table(req), op.load.start,
                            op.load.end,
                        )
                    )  # fmt: skip
                    self._loaded(op.req_id, op.load, end)
            if op.save_to > 0:
                self._pending_saves.append((op.req_id, op.save_to))

    def _table(self, req: _WorkerRequest) -> Any:
        return _jvm.int_array(np.asarray(req.blocks, dtype=np.int32))

    def _track(self, ticket: int, req_id: str, kind: str, load: LoadSpec | None) -> None:
        self._tickets[ticket] = (req_id, kind, load)
        self._requests[req_id].tickets.add(ticket)

    def _loaded(self, req_id: str, load: LoadSpec, end: int) -> None:
        """Records a finished load: unpins, and reports blocks it could not fill."""
        req = self._requests.get(req_id)
        if req is None:
            return
        self._engine.unpin(req.java_id)  # type: ignore[union-attr]
        if end < load.end:
            bs = self._block_size
            self._load_errors.update(req.blocks[end // bs : (load.end + bs - 1) // bs])
            logger.debug("kvtier: %s loaded %d of %d tokens", req_id, end, load.end)

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Layerwise loads: copies this layer of every load of the step."""
        layer = self._layer_index.get(layer_name)
        if layer is None:
            return
        for _, handle, _ in self._sync_loads:
            self._worker.loadLayer(handle, layer)
        if self._sync_loads:
            self._order_compute()
        if layer == len(self._layer_index) - 1:
            self._end_layer_loads()

    def _end_layer_loads(self) -> None:
        loads, self._sync_loads = self._sync_loads, []
        for req_id, handle, spec in loads:
            self._loaded(req_id, spec, int(self._worker.endLoad(handle)))

    def save_kv_layer(self, layer_name: str) -> None:
        """Layerwise saves: copies this layer of every save of the step as soon as it is written."""
        layer = self._layer_index.get(layer_name)
        if layer is None or not self._layerwise:
            return
        if layer == 0:
            for req_id, save_to in self._take_saves():
                req = self._requests[req_id]
                handle = int(
                    self._worker.beginSave(req.tokens, save_to, self._table(req), req.saved_chunks)
                )
                req.saved_chunks = -(-save_to // self._chunk_tokens)
                if handle != 0:
                    self._layer_saves.append((req_id, handle, save_to))
        if self._layer_saves:
            self._fence()
        for _, handle, _ in self._layer_saves:
            self._worker.saveLayer(handle, layer)

    def wait_for_save(self) -> None:
        """Ends the step: layerwise saves become visible; whole saves go to transfer threads."""
        if self._worker is None:
            return
        if self._sync_loads:  # a step whose forward never reached the last layer
            self._end_layer_loads()
        saves, self._layer_saves = self._layer_saves, []
        for _, handle, _ in saves:
            self._worker.endSave(handle, True)
        whole = self._take_saves()
        if whole:
            self._fence()
        for req_id, save_to in whole:
            req = self._requests[req_id]
            ticket = int(
                self._worker.submitSave(req.tokens, save_to, self._table(req), req.saved_chunks)
            )
            req.saved_chunks = -(-save_to // self._chunk_tokens)
            self._track(ticket, req_id, "save", None)

    def _take_saves(self) -> list[tuple[str, int]]:
        saves, self._pending_saves = self._pending_saves, []
        return [(r, s) for r, s in saves if r in self._requests]

    def handle_preemptions(self, meta: KVTierMetadata) -> None:
        """Waits for in-flight saves out of preempted requests' blocks before vLLM reuses them."""
        self._preempted += len(meta.preempted)
        tickets = [
            t
            for req_id in meta.preempted
            if (req := self._requests.get(req_id)) is not None
            for t in req.tickets
        ]
        if tickets and not self._worker.awaitTickets(
            _jvm.long_array(np.array(tickets)), SAVE_WAIT_MILLIS
        ):
            logger.warning("kvtier: saves of preempted requests still running after %d ms",
                           SAVE_WAIT_MILLIS)  # fmt: skip
        for req_id in meta.preempted:
            req = self._requests.get(req_id)
            if req is not None:
                req.blocks = []

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        """Requests whose deferred block freeing may end, and background loads that ended."""
        if self._worker is None:
            return None, None
        done = self._worker.drainCompleted()
        for i in range(0, len(done), 2):
            ticket, result = int(done[i]), int(done[i + 1])
            req_id, kind, load = self._tickets.pop(ticket, ("", "", None))
            req = self._requests.get(req_id)
            if req is not None:
                req.tickets.discard(ticket)
            if kind == "load" and load is not None:
                self._loaded(req_id, load, result)
                self._finished_recving.add(req_id)
        for req_id in finished_req_ids:
            req = self._requests.get(req_id)
            if req is not None:
                req.finished = True
        sending: set[str] = set()
        for req_id, req in list(self._requests.items()):
            if req.finished and not req.tickets:
                self._engine.unpin(req.java_id)  # type: ignore[union-attr]
                del self._requests[req_id]
                if req.reports_finish:
                    sending.add(req_id)
        recving, self._finished_recving = self._finished_recving, set()
        return sending or None, recving or None

    def get_block_ids_with_load_errors(self) -> set[int]:
        """Blocks whose load failed since the last call (vLLM recomputes them)."""
        errors, self._load_errors = self._load_errors, set()
        return errors

    def stats(self) -> dict[str, int]:
        """The engine's and the worker's counters."""
        if self._engine is None:
            return {}
        names = [str(n) for n in _jvm.java_class("io.kvtier.engine.KvWorker").statNames()]
        out = self._engine.stats()
        out.update(zip(names, (int(v) for v in self._worker.stats()), strict=True))
        out["preempted_requests"] = self._preempted
        return out

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


def _rank() -> int:
    """This worker's rank within its engine (0 without a distributed setup)."""
    try:
        from vllm.distributed.parallel_state import get_world_group

        return int(get_world_group().rank_in_group)
    except (ImportError, AssertionError, AttributeError):
        return 0
