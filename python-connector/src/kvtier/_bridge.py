"""Typed wrappers of the Java facades: the only place the package names Java classes.

The Java core is reached through two facades in ``io.kvtier.bridge``, one per vLLM role:
:class:`WorkerBridge` (``WorkerBridge``: engine, worker, paged KV caches, descriptors, key extras,
host memory, CUDA, lookup server) and :class:`SchedulerBridge` (``SchedulerBridge``: settings).
Everything else comes back as a value from them; :data:`worker` and :data:`scheduler` are the
instances the package calls. (``_jvm`` itself names ``BridgeProbe`` for its start-up check, and
:mod:`kvtier.server` names the cache server's main class on a ``java -cp`` command line.)

Descriptors go over as dicts of named fields, checked in Java: a missing, unknown, mistyped or
out-of-range field raises :class:`kvtier.JavaValueError` naming it.

Return values are of two kinds. A :class:`~kvtier._jvm.JavaProxy` wraps an object whose methods
Python calls and whose exceptions must arrive as :class:`kvtier.JavaError` (engines, workers, GPU
caches, lookup servers); a :data:`JavaObject` is a raw Java object that Python hands back to Java
or reads plain getters of (configurations, descriptors, key extras, allocators).

Every call starts the JVM if needed (and raises :class:`kvtier.JvmError` or
:class:`kvtier.JvmForkedError` where :func:`kvtier._jvm.start` would). Thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kvtier import _jvm
from kvtier._jvm import JavaProxy

WORKER_BRIDGE = "io.kvtier.bridge.WorkerBridge"
SCHEDULER_BRIDGE = "io.kvtier.bridge.SchedulerBridge"

JavaObject = Any
"""A raw Java object, handed back to Java or read through plain getters."""


def _config(settings: Mapping[str, Any]) -> JavaObject:
    """``settings`` (``kv_connector_extra_config`` or an engine's) as the Java map a YAML file
    gives: nested mappings, lists and numpy scalars converted (:func:`kvtier._jvm.config_value`)."""
    return _jvm.config_value(dict(settings))


class SchedulerBridge:
    """The scheduler role's facade (``io.kvtier.bridge.SchedulerBridge``)."""

    def load_config(self, settings: Mapping[str, Any]) -> JavaObject:
        """This process's ``KvTierConfig``: the YAML file, ``KVTIER_*`` variables, ``settings``.

        Values may be nested mappings and lists, numpy scalars included (:func:`_config`).

        Raises:
            kvtier.JavaValueError: an unknown key or a malformed value (``ConfigException``; the
                message names the key, the value and what is allowed).
            kvtier.ConfigError: a value that is no setting at all (a set, an object).
        """
        return _jvm.java_class(SCHEDULER_BRIDGE).loadConfig(_config(settings))


class WorkerBridge:
    """The worker role's facade (``io.kvtier.bridge.WorkerBridge``)."""

    @staticmethod
    def _java() -> JavaProxy:
        return _jvm.java_class(WORKER_BRIDGE)

    # ---- configuration and descriptors -------------------------------------------------------

    def load_config(self, settings: Mapping[str, Any]) -> JavaObject:
        """This process's ``KvTierConfig``: the YAML file, ``KVTIER_*`` variables, ``settings``.

        Raises:
            kvtier.JavaValueError: an unknown key or a malformed value (``ConfigException``).
            kvtier.ConfigError: a value that is no setting at all (a set, an object).
        """
        return self._java().loadConfig(_config(settings))

    def key_namespace(self, fields: Mapping[str, Any]) -> JavaObject:
        """A ``KeyNamespace`` from exactly the fields ``model_id``, ``kv_dtype``, ``num_layers``,
        ``kv_heads_per_rank``, ``head_size``, ``tp_size``, ``tp_rank``, ``chunk_tokens``,
        ``mla``, ``chunk_order`` and ``first_layer``.

        Raises:
            kvtier.JavaValueError: a field is missing, unknown, of the wrong type or out of range
                (the message names it), or ``tp_rank >= tp_size``.
        """
        return self._java().keyNamespace(dict(fields))

    def paged_layout(self, fields: Mapping[str, Any]) -> JavaObject:
        """A ``PagedLayout`` (one layer, strides in elements) from exactly the fields
        ``num_blocks``, ``block_size``, ``kv_count``, ``num_heads``, ``head_size``,
        ``element_bytes``, ``kv_stride``, ``block_stride``, ``slot_stride`` and ``head_stride``.

        Raises:
            kvtier.JavaValueError: a field is missing, unknown, of the wrong type or out of range
                (the message names it).
        """
        return self._java().pagedLayout(dict(fields))

    def key_extras(self, words: np.ndarray | None) -> JavaObject:
        """Key extras (:func:`kvtier.keys.words`) as a ``KeyExtras``; None: a plain prompt.

        Raises:
            kvtier.JavaValueError: ``words`` has an odd length or no root digest.
        """
        java_words = None if words is None else _jvm.long_array(np.asarray(words, np.int64))
        return self._java().keyExtras(java_words)

    # ---- engine and worker -------------------------------------------------------------------

    def mmap_allocator(self) -> JavaObject:
        """The ``HostAllocator`` of anonymous page-aligned mappings (a KV cache in host memory)."""
        return self._java().mmapAllocator()

    def open_engine(
        self,
        config: JavaObject,
        namespace: JavaObject,
        bytes_per_token: int,
        allocator: JavaObject,
        writes_remote: bool,
    ) -> JavaProxy:
        """Opens a ``KvEngine``; the caller closes it.

        Raises:
            kvtier.JavaValueError: the chunk sizes disagree, ``bytes_per_token <= 0``, the CPU
                budget holds no chunk, or the configuration asks for what cannot run.
        """
        java = self._java().openEngine(config, namespace, bytes_per_token, allocator, writes_remote)
        return JavaProxy(java)

    def engine_stat_names(self) -> list[str]:
        """The names of the engine's ``stats()`` counters, in order."""
        return [str(n) for n in self._java().engineStatNames()]

    def host_kv_cache(self, addresses: Any, layout: JavaObject, threads: int) -> JavaObject:
        """A ``PagedKvCache`` over layer tensors in host memory at ``addresses`` (a Java
        ``long[]``, one per layer); the tensors must outlive it.

        Raises:
            kvtier.JavaValueError: an address is 0.
        """
        return self._java().hostKvCache(addresses, layout, threads)

    def open_worker(
        self, engine: JavaObject, cache: JavaObject, threads: int, groups: JavaObject | None = None
    ) -> JavaProxy:
        """Starts a ``KvWorker`` moving tokens between ``cache`` and ``engine`` (the raw
        ``KvEngine``, :attr:`kvtier.engine.Engine.java`) on ``threads`` background threads; the
        caller closes it. ``groups``: the model's KV cache groups (:meth:`cache_groups`; None: one
        group of full-attention layers).

        Raises:
            kvtier.JavaValueError: the cache's bytes per token differ from the engine's, or the
                groups are not of the cache's layers.
        """
        if groups is None:
            return JavaProxy(self._java().openWorker(engine, cache, threads))
        return JavaProxy(self._java().openWorker(engine, cache, threads, groups))

    def cache_groups(self, layer_groups: list[int], windows: list[int]) -> JavaObject:
        """The core's ``CacheGroups``: layer ``l`` is in group ``layer_groups[l]``, group ``g``
        attends to a sliding window of ``windows[g]`` tokens (0: full attention).

        Raises:
            kvtier.JavaValueError: a layer's group does not exist or a group has no layer.
        """
        return self._java().cacheGroups(
            _jvm.int_array(np.asarray(layer_groups, dtype=np.int32)),
            _jvm.int_array(np.asarray(windows, dtype=np.int32)),
        )

    def warm_up(self, config: JavaObject, layout: JavaObject, threads: int) -> JavaObject:
        """Runs the save and load paths on scratch memory shaped like ``layout`` (a
        ``PagedLayout``) under ``config`` (a ``KvTierConfig``), once per process, so the first
        requests do not pay for the JVM's warm-up (``WarmUp.run``). Returns its ``Report``
        (``prompts()``, ``loadedTokens()``, ``disk()``, ``nanos()``). Never raises for a failed
        warm-up: it is logged and reported as 0 prompts."""
        return self._java().warmUp(config, layout, threads)

    def warm_up_cpu_in_background(
        self,
        config: JavaObject,
        block_size: int,
        heads: int,
        head_size: int,
        element_bytes: int,
        threads: int,
    ) -> None:
        """Starts :meth:`warm_up` on a background Java thread for vLLM's CPU attention backend
        with the model's geometry, before the KV cache exists (``WarmUp.startForCpuBackend``), and
        returns at once; a later :meth:`warm_up` in this process returns at once too.

        Raises:
            kvtier.JavaValueError: a geometry no layout can have (e.g. a block size of 0).
        """
        self._java().warmUpCpuInBackground(
            config, block_size, heads, head_size, element_bytes, threads
        )

    def await_warm_up(self, timeout_s: float) -> JavaObject | None:
        """The background warm-up's ``Report`` once it ends, waiting up to ``timeout_s``; None if
        none was started or it has not ended in time."""
        return self._java().awaitWarmUp(int(timeout_s * 1000))

    def worker_stat_names(self) -> list[str]:
        """The names of the worker's ``stats()`` counters, in order."""
        return [str(n) for n in self._java().workerStatNames()]

    def start_lookup_server(self, engine: JavaObject, socket_path: str) -> JavaProxy:
        """Serves the lookups of ``engine`` (the raw ``KvEngine``) on a Unix domain socket at
        ``socket_path`` (a ``LookupServer``); blocks until it is bound. The caller closes it.

        Raises:
            kvtier.JavaIOError: another server answers there, a non-socket file is there, or the
                socket cannot be bound.
        """
        return JavaProxy(self._java().startLookupServer(engine, socket_path))

    # ---- CUDA ----------------------------------------------------------------------------------

    def cuda_context(self, ordinal: int) -> JavaObject:
        """Retains CUDA device ``ordinal``'s primary context (the one PyTorch uses).

        Raises:
            kvtier.JavaStateError: CUDA cannot be used here.
            kvtier.JavaValueError: there is no such device.
        """
        return self._java().cudaContext(ordinal)

    def pinned_allocator(self, context: JavaObject) -> JavaObject:
        """A ``HostAllocator`` of pinned memory of ``context`` (``allocate(bytes)`` gives a
        chunk buffer)."""
        return self._java().pinnedAllocator(context)

    def gpu_kv_cache(
        self,
        context: JavaObject,
        addresses: Any,
        layout: JavaObject,
        pinned: JavaObject,
        gather_mode: str,
        scatter_mode: str,
    ) -> JavaProxy:
        """Binds vLLM's per-layer KV tensors on a GPU (a ``GpuKvCache``; ``addresses`` a Java
        ``long[]``); modes are ``mapped`` or ``dma``. The caller closes it.

        Raises:
            kvtier.JavaValueError: an unknown mode, an address of 0, or a layout that does not fit
                the tensors.
        """
        java = self._java().gpuKvCache(
            context, addresses, layout, pinned, gather_mode, scatter_mode
        )
        return JavaProxy(java)

    # ---- host memory -------------------------------------------------------------------------

    def copy(self, src_address: int, dst_address: int, nbytes: int, threads: int = 1) -> None:
        """Copies ``nbytes`` between host addresses; ``threads > 1`` splits the copy (the ranges
        must not overlap then). Blocks until done.

        Raises:
            kvtier.JavaValueError: an address of 0, a negative count, or overlapping ranges.
        """
        if threads == 1:
            self._java().copy(src_address, dst_address, nbytes)
        else:
            self._java().copyParallel(src_address, dst_address, nbytes, threads)

    def crc32(self, address: int, nbytes: int) -> int:
        """The CRC-32 of ``nbytes`` at ``address``."""
        return int(self._java().crc32(address, nbytes))

    def fill_pattern(self, address: int, nbytes: int, seed: int) -> None:
        """Writes ``byte[i] = (i * 131 + seed) mod 256`` over ``nbytes`` at ``address``.

        Raises:
            kvtier.JavaValueError: a negative seed (or address 0, negative count).
        """
        self._java().fillPattern(address, nbytes, seed)


worker = WorkerBridge()
"""The worker role's facade."""

scheduler = SchedulerBridge()
"""The scheduler role's facade."""
