"""``KVTierConnector``: kvtier as a vLLM V1 KV connector.

Start vLLM with ``--kv-transfer-config '{"kv_connector":"KVTierConnector","kv_role":"kv_both"}'``
(the name is registered by kvtier's vLLM plugin), or name this module with
``"kv_connector_module_path":"kvtier.vllm.connector"``. Settings come from ``KVTIER_CONFIG_FILE``
(or LMCache's ``LMCACHE_CONFIG_FILE``), ``LMCACHE_<KEY>`` and ``KVTIER_<KEY>`` variables and
``kv_connector_extra_config`` (highest priority; LMCache's ``lmcache.`` prefix is accepted); a bad
setting stops vLLM at start-up with a message naming the key.

The connector dispatches by role: :class:`~kvtier.vllm.scheduler.KVTierScheduler` in the
scheduler process, :class:`~kvtier.vllm.worker.KVTierWorker` in each worker process.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
    KVConnectorWorkerMetadata,
    SupportsHMA,
)

from kvtier import _jvm
from kvtier.vllm import groups, versions
from kvtier.vllm.metadata import KVTierMetadata

try:  # vLLM 0.32: receive failures are named per request next to the finished transfers
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorTransferResults
except ImportError:  # pragma: no cover - a vLLM that only calls get_finished
    KVConnectorTransferResults = None  # type: ignore[assignment,misc]
from kvtier.vllm.scheduler import KVTierScheduler
from kvtier.vllm.stats import KVTierConnectorStats, KVTierPromMetrics
from kvtier.vllm.worker import KVTierWorker

if TYPE_CHECKING:
    import torch
    from vllm.attention.backends.abstract import AttentionMetadata
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

__all__ = ["KVTierConnector", "KVTierMetadata"]

logger = logging.getLogger(__name__)


def _log_where_vllm_logs() -> None:
    """kvtier's Python log records go where vLLM's go, in its format and at its level, unless the
    application has configured logging itself (handlers on ``kvtier`` or on the root logger):
    vLLM configures only its own ``vllm`` logger, so kvtier's INFO lines would be dropped."""
    ours = logging.getLogger("kvtier")
    if ours.handlers or logging.getLogger().handlers:
        return
    theirs = logging.getLogger("vllm")
    for handler in theirs.handlers:
        ours.addHandler(handler)
    if theirs.handlers:
        ours.setLevel(theirs.level or logging.INFO)
        ours.propagate = False


_log_where_vllm_logs()

F = TypeVar("F", bound=Callable[..., Any])


def _never_raises(fallback: Callable[[], Any]) -> Callable[[F], F]:
    """The last line behind a connector method: an exception the side did not turn into a miss
    itself is logged (once per method) and ``fallback()`` is returned, so vLLM's engine goes on.
    """

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def guarded(self: KVTierConnector, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except Exception:  # no exception leaves a connector method
                if method.__name__ not in _LOGGED:
                    _LOGGED.add(method.__name__)
                    logger.exception("kvtier: %s failed (logged once)", method.__name__)
                return fallback()

        return guarded  # type: ignore[return-value]

    return wrap


_LOGGED: set[str] = set()


class KVTierConnector(KVConnectorBase_V1, SupportsHMA):
    """Saves prompts' KV in chunks to kvtier's tiers and loads it back for shared prefixes.

    A ``SupportsHMA`` connector: vLLM keeps its hybrid KV cache manager on, and a model mixing
    sliding-window and full-attention layers keeps its memory savings (see
    :mod:`kvtier.vllm.groups` for the groups kvtier serves and those it refuses at start-up).

    No method but ``register_kv_caches`` (where a bad layout must stop vLLM) raises: each side
    turns its failures into misses, failed loads (recomputed) or dropped saves.
    """

    @property
    def requires_kv_delivery(self) -> bool:
        """A cache: a save dropped by a preemption is a later miss, not a lost hand-off."""
        return False

    def __init__(
        self,
        vllm_config: VllmConfig,
        role: KVConnectorRole,
        kv_cache_config: KVCacheConfig | None = None,
    ) -> None:
        super().__init__(vllm_config, role, kv_cache_config)
        import vllm

        versions.check(vllm.__version__, (KVConnectorBase_V1, SupportsHMA), type(self))
        settings = dict(self._kv_transfer_config.kv_connector_extra_config or {})
        self._scheduler: KVTierScheduler | None = None
        self._worker: KVTierWorker | None = None
        began = time.perf_counter()
        jvm_before = _jvm.running()
        with _jvm.collections_paused():  # a process of vLLM's: see collections_paused
            self._set_up(vllm_config, role, kv_cache_config, settings)
        info = _jvm.info()
        logger.info(
            "kvtier: %s side set up in %.0f ms (%s)",
            "scheduler" if role == KVConnectorRole.SCHEDULER else "worker",
            (time.perf_counter() - began) * 1e3,
            f"JVM started in {info.start_s * 1e3:.0f} ms"
            if info is not None and not jvm_before
            else "JVM already running",
        )

    def _set_up(
        self,
        vllm_config: VllmConfig,
        role: KVConnectorRole,
        kv_cache_config: KVCacheConfig | None,
        settings: dict[str, Any],
    ) -> None:
        if role == KVConnectorRole.SCHEDULER:
            # The workers registered their KV caches first, and refused groups kvtier does not
            # serve with their tensors' shapes; this names them again where they were not.
            self._scheduler = KVTierScheduler(
                vllm_config, settings, groups.classify(kv_cache_config)
            )
            # A kvtier miss or failed load must never fail a request (vLLM's default policy for
            # connectors is "fail"): failed blocks are recomputed. The scheduler reads this right
            # after creating its connector.
            if self._kv_transfer_config.kv_load_failure_policy != "recompute":
                logger.info("kvtier: kv_load_failure_policy set to 'recompute'")
                self._kv_transfer_config.kv_load_failure_policy = "recompute"
        else:
            self._worker = KVTierWorker(vllm_config, settings, kv_cache_config)

    @classmethod
    def supports_sleep_mode(cls, kv_transfer_config: Any) -> bool:
        """vLLM 0.33+: sleep mode (and discard) call ``unregister_kv_caches`` before the KV
        tensors' memory is released and ``restore_kv_caches`` once it is backed again at the same
        addresses; kvtier copies nothing in between (see ``KVTierWorker``)."""
        return True

    # Left at vLLM's defaults, deliberately:
    # - kv_cache_access (0.34): IN_PROCESS. kvtier reaches the KV cache from the worker's own
    #   process (host copies, CUDA kernels on vLLM's device); nothing registers it with UCX or
    #   RDMA, so the extensible KV cache may back it however it likes.
    # - may_load_async (0.34): the P/D flag, False for kvtier's requests. True would let requests
    #   start loading while the running batch is full (--max-num-inflight-kv-loads); answering it
    #   needs a lookup, which this hook (called on every enqueue, "must be cheap") must not do.
    #   A request kvtier later loads in the background simply waits in the plain queue.
    # - supports_lookahead_block_hashes (0.34): False. kvtier hashes its own 256-token chunks
    #   (docs/keys.md) and does not read vLLM's block hashes.

    # ---- worker side --------------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        assert self._worker is not None
        with _jvm.collections_paused():
            self._worker.register_kv_caches(kv_caches)

    @_never_raises(lambda: None)
    def unregister_kv_caches(self) -> None:
        if self._worker is not None:
            self._worker.unregister_kv_caches()

    @_never_raises(lambda: None)
    def restore_kv_caches(self) -> None:
        if self._worker is not None:
            self._worker.restore_kv_caches()

    @_never_raises(lambda: None)
    def bind_connector_metadata(self, connector_metadata: KVConnectorMetadata) -> None:
        super().bind_connector_metadata(connector_metadata)
        if self._worker is not None and isinstance(connector_metadata, KVTierMetadata):
            self._worker.bind(connector_metadata)

    @_never_raises(lambda: None)
    def handle_preemptions(self, kv_connector_metadata: KVConnectorMetadata) -> None:
        if self._worker is not None and isinstance(kv_connector_metadata, KVTierMetadata):
            self._worker.handle_preemptions(kv_connector_metadata)

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        # Loads start when the metadata is bound (before the forward when vLLM needs them);
        # nothing is left to do here.
        return

    @_never_raises(lambda: None)
    def wait_for_layer_load(self, layer_name: str) -> None:
        if self._worker is not None:
            self._worker.wait_for_layer_load(layer_name)

    @_never_raises(lambda: None)
    def save_kv_layer(
        self,
        layer_name: str,
        kv_layer: torch.Tensor,
        attn_metadata: AttentionMetadata,
        **kwargs: Any,
    ) -> None:
        if self._worker is not None:
            self._worker.save_kv_layer(layer_name)

    @_never_raises(lambda: None)
    def wait_for_save(self) -> None:
        if self._worker is not None:
            self._worker.wait_for_save()

    @_never_raises(lambda: (None, None))
    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        if self._worker is None:
            return None, None
        return self._worker.get_finished(finished_req_ids)

    @_never_raises(lambda: KVConnectorTransferResults())
    def get_transfer_results(self, finished_req_ids: set[str]) -> KVConnectorTransferResults:
        """:meth:`get_finished` with the background loads that failed with blocks the worker
        cannot name (vLLM recomputes those requests whole)."""
        if self._worker is None:
            return KVConnectorTransferResults()
        sending, recving, failed = self._worker.get_transfer_results(finished_req_ids)
        return KVConnectorTransferResults(
            finished_sending=sending, finished_recving=recving, failed_recving=failed
        )

    @_never_raises(lambda: None)
    def build_connector_worker_meta(self) -> KVConnectorWorkerMetadata | None:
        """Running requests whose saves all ended (the scheduler side frees their blocks at
        their finish without waiting a step for ``finished_sending``)."""
        if self._worker is None:
            return None
        return self._worker.build_connector_worker_meta()

    @_never_raises(lambda: None)
    def get_kv_connector_kv_cache_events(self) -> Any:
        """KV events of this rank's CPU and disk tiers (see :mod:`kvtier.vllm.events`)."""
        if self._worker is None:
            return None
        return self._worker.get_kv_connector_kv_cache_events()

    @_never_raises(set)
    def get_block_ids_with_load_errors(self) -> set[int]:
        if self._worker is None:
            return set()
        return self._worker.get_block_ids_with_load_errors()

    @_never_raises(lambda: None)
    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.shutdown()

    # ---- scheduler side -----------------------------------------------------------------------

    @_never_raises(lambda: (0, False))
    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        assert self._scheduler is not None
        return self._scheduler.get_num_new_matched_tokens(request, num_computed_tokens)

    @_never_raises(lambda: None)
    def update_state_after_alloc(
        self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int
    ) -> None:
        assert self._scheduler is not None
        self._scheduler.update_state_after_alloc(request, blocks, num_external_tokens)

    @_never_raises(KVTierMetadata)
    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        assert self._scheduler is not None
        return self._scheduler.build_connector_meta(scheduler_output)

    @_never_raises(lambda: None)
    def update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        if self._scheduler is not None:
            self._scheduler.update_connector_output(connector_output)

    @_never_raises(tuple)
    def take_events(self) -> Iterable[Any]:
        """KV events of kvtier's tiers every worker reported (published with vLLM's own)."""
        if self._scheduler is None:
            return ()
        return self._scheduler.take_events()

    @_never_raises(lambda: (False, None))
    def request_finished(
        self, request: Request, block_ids: list[int]
    ) -> tuple[bool, dict[str, Any] | None]:
        assert self._scheduler is not None
        return self._scheduler.request_finished(request), None

    @_never_raises(lambda: (False, None))
    def request_finished_all_groups(
        self, request: Request, block_ids: tuple[list[int], ...]
    ) -> tuple[bool, dict[str, Any] | None]:
        """:meth:`request_finished` for vLLM's hybrid KV cache manager (``SupportsHMA``), with
        every group's blocks: the answer holds all of them or none."""
        assert self._scheduler is not None
        return self._scheduler.request_finished(request), None

    # ---- stats ----------------------------------------------------------------------------------

    @_never_raises(lambda: None)
    def get_kv_connector_stats(self) -> KVTierConnectorStats | None:
        """What this side counted since its last report (see :mod:`kvtier.vllm.stats`)."""
        if self._worker is not None:
            return self._worker.get_kv_connector_stats()
        if self._scheduler is not None:
            return self._scheduler.get_kv_connector_stats()
        return None

    @classmethod
    def build_kv_connector_stats(
        cls, data: dict[str, Any] | None = None
    ) -> KVTierConnectorStats | None:
        """A report rebuilt in vLLM's logger process from its ``data``."""
        return KVTierConnectorStats(data=dict(data)) if data is not None else KVTierConnectorStats()

    @classmethod
    def build_prom_metrics(
        cls,
        vllm_config: VllmConfig,
        metric_types: dict[type, type],
        labelnames: list[str],
        per_engine_labelvalues: dict[int, list[object]],
    ) -> KVTierPromMetrics:
        """The ``kvtier_*`` series on ``vllm serve``'s ``/metrics``."""
        return KVTierPromMetrics(vllm_config, metric_types, labelnames, per_engine_labelvalues)

    @_never_raises(dict)
    def get_external_cache_hit_sources(
        self, request: Request, num_external_tokens: int
    ) -> dict[Any, int]:
        """Where the tokens of the request's load are stored (vLLM's ``CacheHitSource``)."""
        if self._scheduler is None or num_external_tokens == 0:
            return {}
        return self._scheduler.get_external_cache_hit_sources(request, num_external_tokens)

    @_never_raises(lambda: False)
    def reset_cache(self) -> bool:
        """A new cache epoch: nothing stored before this call is served after it (see
        ``KVTierScheduler.reset_cache``); vLLM calls it for ``reset_prefix_cache`` with
        ``reset_connector``, e.g. after a weight update."""
        if self._scheduler is None:
            return False
        return self._scheduler.reset_cache()
