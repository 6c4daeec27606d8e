"""kvtier's counters through vLLM's own channels: connector stats and Prometheus metrics.

Both sides of the connector count what they see and hand vLLM the change since their last report
(:class:`KVTierConnectorStats`): the scheduler side its lookups and the hits vLLM took, split by
where they come from; each worker its loads, saves, tiers, errors and latencies, read from its
Java engine. vLLM adds the reports of every rank and every step, prints them at its stats interval
(``KV Transfer metrics: ...``) and feeds them to :class:`KVTierPromMetrics`, which exports them on
``vllm serve``'s ``/metrics`` as the ``kvtier_*`` series of :data:`METRICS`.

A report is a plain dict (``data``) that crosses processes: counters are increments, gauges the
latest value (labelled by rank, so ranks never overwrite each other), histograms the observed
values. A value kvtier cannot work out is left out, never guessed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vllm.distributed.kv_transfer.kv_connector.v1.metrics import (
    KVConnectorPromMetrics,
    KVConnectorStats,
)

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds: a lookup or an in-memory load of a few chunks takes well under a millisecond to a
few; a disk or remote load of a long prompt, or a save behind a busy disk, up to seconds."""


@dataclass(frozen=True)
class Metric:
    """One ``kvtier_*`` series: its kind, its help text and its own labels (besides vLLM's
    ``model_name`` and ``engine``)."""

    kind: str
    doc: str
    labels: tuple[str, ...] = ()


METRICS: dict[str, Metric] = {
    # scheduler side
    "kvtier_lookups": Metric(
        COUNTER,
        "Requests vLLM admitted after asking kvtier (once per admission, as vLLM counts the "
        "queries of its own prefix cache).",
    ),
    "kvtier_lookup_tokens": Metric(
        COUNTER,
        "Prompt tokens of those requests kvtier was asked about (past vLLM's own prefix cache "
        "hit).",
    ),
    "kvtier_hit_tokens": Metric(
        COUNTER,
        "Prompt tokens vLLM took from kvtier instead of computing them, by where they were "
        "stored (cpu, disk, remote).",
        ("source",),
    ),
    "kvtier_lookup_seconds": Metric(
        HISTOGRAM,
        "Time of one lookup as the scheduler sees it (a socket round trip to the "
        "workers when they run in other processes).",
    ),
    "kvtier_lookups_deferred": Metric(
        COUNTER,
        "Lookups answered 'ask again next step': a remote store's answer was still on its way "
        "(remote_pending), or another request was saving the chunk after the hit (storing).",
        ("reason",),
    ),
    "kvtier_unkeyable_requests": Metric(
        COUNTER, "Requests kvtier does not cache because it cannot key them (counted misses)."
    ),
    "kvtier_connector_failures": Metric(
        COUNTER,
        "Failures turned into a miss, a recomputed load or a dropped save, by connector side.",
        ("side",),
    ),
    # worker side
    "kvtier_loaded_tokens": Metric(COUNTER, "Tokens copied from kvtier into vLLM's KV cache."),
    "kvtier_loaded_bytes": Metric(COUNTER, "Bytes copied from kvtier into vLLM's KV cache."),
    "kvtier_saved_chunks": Metric(COUNTER, "Chunks saved from vLLM's KV cache into the CPU tier."),
    "kvtier_saved_bytes": Metric(COUNTER, "Bytes saved from vLLM's KV cache into the CPU tier."),
    "kvtier_load_seconds": Metric(
        HISTOGRAM, "Time of one load, from its first read (CPU, disk or remote) to its last copy."
    ),
    "kvtier_save_seconds": Metric(
        HISTOGRAM,
        "Time of one save, from the end of the step that computed its tokens until its chunks "
        "are visible in the CPU tier (copies to disk and remote follow in the background).",
    ),
    "kvtier_failed_loads": Metric(
        COUNTER, "Loads that did not load everything (vLLM recomputed the rest)."
    ),
    "kvtier_failed_load_tokens": Metric(
        COUNTER,
        "Of the hit tokens, those a load could not fill (vLLM recomputed them), by the tier they "
        "were to come from: hit tokens minus these is what kvtier loaded.",
        ("source",),
    ),
    "kvtier_dropped_saves": Metric(
        COUNTER,
        "Saves, or copies to a lower tier, not made, by reason: failed (a save that could not "
        "start, whose copy out of vLLM's KV cache failed, or that the transfer queue refused), "
        "cpu_full (no room in the CPU tier), copy_down_queue (the queue to the lower tiers was "
        "full), disk, remote (the tier refused it: queue full, no room, an error).",
        ("reason",),
    ),
    "kvtier_tier_puts": Metric(COUNTER, "Chunks stored into each tier.", ("tier",)),
    "kvtier_tier_evictions": Metric(
        COUNTER, "Chunks evicted from the CPU tier to make room.", ("tier",)
    ),
    "kvtier_errors": Metric(
        COUNTER,
        "Failures by tier and kind: the disk and remote tiers' errors, the CPU tier's pool "
        "allocations that failed (cpu, allocation_failed), transfers the worker's queue refused "
        "(worker, transfer_rejected).",
        ("tier", "kind"),
    ),
    "kvtier_remote_lookups": Metric(
        COUNTER,
        "Questions to the remote store on behalf of lookups, by outcome: asked, timeout (a "
        "miss), rejected (too many pending).",
        ("outcome",),
    ),
    "kvtier_expired_pins": Metric(
        COUNTER, "Pins released by pin_timeout_sec (a request that never ended)."
    ),
    "kvtier_tier_chunks": Metric(GAUGE, "Chunks held in each tier.", ("tier", "rank")),
    "kvtier_tier_bytes": Metric(GAUGE, "Bytes held in each tier.", ("tier", "rank")),
    "kvtier_cpu_mapped_bytes": Metric(
        GAUGE,
        "Memory the CPU tier's pool has mapped (it grows up to max_local_cpu_size).",
        ("rank",),
    ),
}


def _key(labels: Iterable[object]) -> str:
    """Label values as one string key (plain dicts of strings survive vLLM's IPC)."""
    return ",".join(str(v) for v in labels)


@dataclass
class KVTierConnectorStats(KVConnectorStats):
    """kvtier's report to vLLM: ``data`` is ``{"counters" | "gauges" | "histograms": {name:
    {label values joined by ",": value}}}`` with the names of :data:`METRICS`."""

    def __post_init__(self) -> None:
        for kind in ("counters", "gauges", "histograms"):
            self.data.setdefault(kind, {})

    def count(self, name: str, value: int | float, *labels: object) -> None:
        """Adds ``value`` to a counter (nothing for 0)."""
        if value:
            series = self.data["counters"].setdefault(name, {})
            key = _key(labels)
            series[key] = series.get(key, 0) + value

    def set(self, name: str, value: int | float, *labels: object) -> None:
        """Sets a gauge."""
        self.data["gauges"].setdefault(name, {})[_key(labels)] = value

    def observe(self, name: str, values: Iterable[float], *labels: object) -> None:
        """Adds observations to a histogram."""
        values = list(values)
        if values:
            self.data["histograms"].setdefault(name, {}).setdefault(_key(labels), []).extend(values)

    def reset(self) -> None:
        self.data = {"counters": {}, "gauges": {}, "histograms": {}}

    def aggregate(self, other: KVConnectorStats) -> KVConnectorStats:
        """Adds another report (another rank's, or a later step's) to this one."""
        if not isinstance(other, KVTierConnectorStats):
            return self
        for name, series in other.data.get("counters", {}).items():
            for key, value in series.items():
                mine = self.data["counters"].setdefault(name, {})
                mine[key] = mine.get(key, 0) + value
        for name, series in other.data.get("gauges", {}).items():
            self.data["gauges"].setdefault(name, {}).update(series)
        for name, series in other.data.get("histograms", {}).items():
            for key, values in series.items():
                self.data["histograms"].setdefault(name, {}).setdefault(key, []).extend(values)
        return self

    def is_empty(self) -> bool:
        return not any(self.data.get(kind) for kind in ("counters", "gauges", "histograms"))

    def total(self, name: str, **labels: str) -> float:
        """A counter summed over the series whose labels match ``labels``."""
        metric = METRICS[name]
        out = 0.0
        for key, value in self.data["counters"].get(name, {}).items():
            values = dict(zip(metric.labels, key.split(",") if key else (), strict=False))
            if all(values.get(k) == v for k, v in labels.items()):
                out += value
        return out

    def reduce(self) -> dict[str, int | float]:
        """The interval's summary for vLLM's log line: hit rate and hit tokens per source, data
        moved, mean latencies, what was dropped or failed, and what the tiers hold."""
        out: dict[str, int | float] = {}
        asked = self.total("kvtier_lookup_tokens")
        hits = self.data["counters"].get("kvtier_hit_tokens", {})
        if asked:
            out["hit_rate"] = round(sum(hits.values()) / asked, 3)
        for source, value in sorted(hits.items()):
            out[f"hit_tokens_{source}"] = value
        for name, label in (
            ("kvtier_loaded_bytes", "loaded_MiB"),
            ("kvtier_saved_bytes", "saved_MiB"),
        ):
            if value := self.total(name):
                out[label] = round(value / 2**20, 1)
        for name, label in (
            ("kvtier_lookup_seconds", "lookup_ms"),
            ("kvtier_load_seconds", "load_ms"),
            ("kvtier_save_seconds", "save_ms"),
        ):
            values = [v for s in self.data["histograms"].get(name, {}).values() for v in s]
            if values:
                out[f"{label}_mean"] = round(1e3 * sum(values) / len(values), 2)
        for name, label in (
            ("kvtier_dropped_saves", "dropped_saves"),
            ("kvtier_failed_loads", "failed_loads"),
            ("kvtier_errors", "errors"),
            ("kvtier_connector_failures", "failures"),
        ):
            if value := self.total(name):
                out[label] = value
        for key, value in sorted(self.data["gauges"].get("kvtier_tier_bytes", {}).items()):
            tier, rank = key.split(",")
            out[f"{tier}_GiB" if rank == "0" else f"{tier}_GiB_rank{rank}"] = round(
                value / 2**30, 3
            )
        return out


class KVTierPromMetrics(KVConnectorPromMetrics):
    """Exports :class:`KVTierConnectorStats` reports as the ``kvtier_*`` series of
    :data:`METRICS` on vLLM's ``/metrics``, labelled by vLLM's engine labels and their own."""

    def __init__(
        self,
        vllm_config: Any,
        metric_types: Mapping[type, type],
        labelnames: list[str],
        per_engine_labelvalues: dict[int, list[object]],
    ) -> None:
        super().__init__(vllm_config, metric_types, labelnames, per_engine_labelvalues)  # type: ignore[arg-type]
        self._metrics: dict[str, Any] = {}
        for name, metric in METRICS.items():
            kwargs: dict[str, Any] = {
                "name": name,
                "documentation": metric.doc,
                "labelnames": [*labelnames, *metric.labels],
            }
            if metric.kind == COUNTER:
                cls = self._counter_cls
            elif metric.kind == GAUGE:
                cls = self._gauge_cls
                kwargs["multiprocess_mode"] = "mostrecent"
            else:
                cls = self._histogram_cls
                kwargs["buckets"] = LATENCY_BUCKETS
            self._metrics[name] = cls(**kwargs)

    def observe(self, transfer_stats_data: dict[str, Any], engine_idx: int = 0) -> None:
        """Records one report. Names or labels it does not know (a report from another kvtier
        version) are skipped, never raised on."""
        engine = [str(v) for v in self.per_engine_labelvalues.get(engine_idx, [])]
        for kind, apply in (
            ("counters", lambda m, v: m.inc(v)),
            ("gauges", lambda m, v: m.set(v)),
            ("histograms", lambda m, vs: [m.observe(v) for v in vs]),
        ):
            for name, series in transfer_stats_data.get(kind, {}).items():
                metric = METRICS.get(name)
                family = self._metrics.get(name)
                if metric is None or family is None:
                    continue
                for key, value in series.items():
                    labels = key.split(",") if key else []
                    if len(labels) != len(metric.labels):
                        continue
                    apply(family.labels(*engine, *labels), value)


class Throttle:
    """Lets a report out at most every ``interval_s``, and whenever ``force`` is given. The first
    report is always due (the monotonic clock starts at boot, so it cannot stand for "never")."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last: float | None = None

    def due(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or self._last is None or now - self._last >= self._interval_s:
            self._last = now
            return True
        return False


TIER_COUNTERS = (
    ("kvtier_tier_puts", "cpu", "puts"),
    ("kvtier_tier_puts", "disk", "disk_puts"),
    ("kvtier_tier_puts", "remote", "remote_puts"),
    ("kvtier_tier_evictions", "cpu", "evictions"),
    ("kvtier_dropped_saves", "failed", "failed_saves"),
    ("kvtier_dropped_saves", "cpu_full", "dropped_puts"),
    ("kvtier_dropped_saves", "copy_down_queue", "copy_down_dropped"),
    ("kvtier_dropped_saves", "disk", "disk_dropped_puts"),
    ("kvtier_dropped_saves", "remote", "remote_dropped_puts"),
    ("kvtier_remote_lookups", "asked", "remote_lookups"),
    ("kvtier_remote_lookups", "timeout", "remote_lookup_timeouts"),
    ("kvtier_remote_lookups", "rejected", "remote_lookups_rejected"),
    ("kvtier_connector_failures", "worker", "connector_failures"),
)
"""(metric, its one label value, the engine or worker counter it follows)."""


def worker_report(
    before: Mapping[str, int],
    now: Mapping[str, int],
    save_ns: Iterable[int],
    load_ns: Iterable[int],
    *,
    rank: int,
    bytes_per_token: int,
    tiers: Iterable[str],
) -> KVTierConnectorStats:
    """One worker's report: the change of its engine's and worker's counters from ``before`` to
    ``now`` (names of ``KVTierWorker.stats``), what its ``tiers`` hold now, and the durations of
    the saves and loads that ended since (nanoseconds)."""
    report = KVTierConnectorStats()

    def delta(name: str) -> int:
        return int(now.get(name, 0)) - int(before.get(name, 0))

    loaded = delta("loaded_tokens")
    report.count("kvtier_loaded_tokens", loaded)
    report.count("kvtier_loaded_bytes", loaded * bytes_per_token)
    report.count("kvtier_saved_chunks", delta("saved_chunks"))
    report.count("kvtier_saved_bytes", delta("saved_bytes"))
    report.count("kvtier_failed_loads", delta("failed_loads"))
    report.count("kvtier_expired_pins", delta("expired_pins"))
    tiers = set(tiers)
    for metric, label, counter in TIER_COUNTERS:  # a tier that is not there counts nothing
        report.count(metric, delta(counter), label)
    report.count("kvtier_errors", delta("pool_allocation_failures"), "cpu", "allocation_failed")
    report.count("kvtier_errors", delta("rejected_transfers"), "worker", "transfer_rejected")
    report.count("kvtier_errors", delta("kv_events_dropped"), "worker", "kv_events_dropped")
    for name in now:
        for tier in ("disk", "remote"):
            prefix = f"{tier}_error_"
            if name.startswith(prefix):
                report.count("kvtier_errors", delta(name), tier, name[len(prefix) :])
    for tier, chunks, held in (("cpu", "entries", "bytes"), ("disk", "disk_entries", "disk_bytes")):
        if tier in tiers:
            report.set("kvtier_tier_chunks", int(now.get(chunks, 0)), tier, rank)
            report.set("kvtier_tier_bytes", int(now.get(held, 0)), tier, rank)
    if "cpu" in tiers:
        report.set("kvtier_cpu_mapped_bytes", int(now.get("pool_mapped_bytes", 0)), rank)
    report.observe("kvtier_save_seconds", (int(ns) / 1e9 for ns in save_ns))
    report.observe("kvtier_load_seconds", (int(ns) / 1e9 for ns in load_ns))
    return report
