"""kvtier's reports to vLLM's stats: the report's arithmetic, its trip across processes, the
worker's counters as metrics, the Prometheus series, and the scheduler side's hits by source."""

from __future__ import annotations

import functools
import pickle
from types import SimpleNamespace

import pytest

pytest.importorskip("vllm", reason="the reports are vLLM's KVConnectorStats")

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from test_scheduler import CHUNK, Lookups, blocks, request, vllm_config
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from kvtier.vllm.connector import KVTierConnector
from kvtier.vllm.stats import (
    LATENCY_BUCKETS,
    METRICS,
    KVTierConnectorStats,
    KVTierPromMetrics,
    Throttle,
    worker_report,
)


def test_reports_add_up_across_ranks_and_steps_and_survive_vllms_ipc() -> None:
    """Counters add, gauges keep the latest per label (ranks apart), histograms keep every
    value; the data dict comes back whole through pickle (worker -> engine core) and msgpack
    (engine core -> frontend), and the logger's copy reduces to the same summary."""
    a = KVTierConnectorStats()
    a.count("kvtier_lookups", 2)
    a.count("kvtier_lookup_tokens", 1000)
    a.count("kvtier_hit_tokens", 512, "cpu")
    a.set("kvtier_tier_bytes", 3 << 30, "cpu", 0)
    a.observe("kvtier_load_seconds", [0.002, 0.004])
    b = KVTierConnectorStats()
    b.count("kvtier_hit_tokens", 256, "cpu")
    b.count("kvtier_hit_tokens", 100, "disk")
    b.count("kvtier_lookup_tokens", 0)  # a zero is not a series
    b.set("kvtier_tier_bytes", 1 << 30, "cpu", 0)
    b.set("kvtier_tier_bytes", 2 << 30, "cpu", 1)
    b.observe("kvtier_load_seconds", [0.006])
    total = a.aggregate(b)
    assert total.data["counters"]["kvtier_hit_tokens"] == {"cpu": 768, "disk": 100}
    assert total.data["gauges"]["kvtier_tier_bytes"] == {"cpu,0": 1 << 30, "cpu,1": 2 << 30}
    assert total.data["histograms"]["kvtier_load_seconds"] == {"": [0.002, 0.004, 0.006]}
    assert total.total("kvtier_hit_tokens") == 868
    assert total.total("kvtier_hit_tokens", source="disk") == 100
    summary = total.reduce()
    assert summary["hit_rate"] == round(868 / 1000, 3)
    assert summary["hit_tokens_cpu"] == 768 and summary["hit_tokens_disk"] == 100
    assert summary["load_ms_mean"] == 4.0
    assert summary["cpu_GiB"] == 1.0 and summary["cpu_GiB_rank1"] == 2.0

    through = msgspec.msgpack.decode(msgspec.msgpack.encode(pickle.loads(pickle.dumps(total)).data))
    rebuilt = KVTierConnector.build_kv_connector_stats(through)
    assert rebuilt.data == total.data and rebuilt.reduce() == summary

    assert not total.is_empty()
    total.reset()
    assert total.is_empty() and KVTierConnectorStats().is_empty()
    assert total.aggregate(KVTierConnectorStats()).is_empty()


def test_worker_report_is_the_change_of_the_engines_counters() -> None:
    """A worker's report: deltas of its counters under their metric names and labels, what each
    configured tier holds now by rank, bytes loaded from tokens, latencies in seconds."""
    before = {
        "loaded_tokens": 100, "saved_chunks": 1, "saved_bytes": 4096, "puts": 1, "disk_puts": 0,
        "evictions": 0, "failed_saves": 0, "dropped_puts": 0, "disk_error_write_failed": 1,
        "entries": 1, "bytes": 4096, "disk_entries": 0, "disk_bytes": 0, "pool_mapped_bytes": 8,
    }  # fmt: skip
    now = {
        **before, "loaded_tokens": 612, "saved_chunks": 3, "saved_bytes": 12288, "puts": 3,
        "disk_puts": 2, "evictions": 1, "failed_saves": 1, "dropped_puts": 2,
        "disk_error_write_failed": 4, "disk_error_corrupt_file": 0, "entries": 2, "bytes": 8192,
        "disk_entries": 2, "disk_bytes": 7000, "kv_events_dropped": 5,
    }  # fmt: skip
    r = worker_report(
        before, now, [2_000_000], [1_000_000, 3_000_000],
        rank=1, bytes_per_token=10, tiers=("cpu", "disk"),
    )  # fmt: skip
    c = r.data["counters"]
    assert c["kvtier_loaded_tokens"] == {"": 512} and c["kvtier_loaded_bytes"] == {"": 5120}
    assert c["kvtier_saved_chunks"] == {"": 2} and c["kvtier_saved_bytes"] == {"": 8192}
    assert c["kvtier_tier_puts"] == {"cpu": 2, "disk": 2}
    assert c["kvtier_tier_evictions"] == {"cpu": 1}
    assert c["kvtier_dropped_saves"] == {"failed": 1, "cpu_full": 2}
    assert c["kvtier_errors"] == {"disk,write_failed": 3, "worker,kv_events_dropped": 5}
    g = r.data["gauges"]
    assert g["kvtier_tier_chunks"] == {"cpu,1": 2, "disk,1": 2}
    assert g["kvtier_tier_bytes"] == {"cpu,1": 8192, "disk,1": 7000}
    assert g["kvtier_cpu_mapped_bytes"] == {"1": 8}
    h = r.data["histograms"]
    assert h["kvtier_save_seconds"] == {"": [0.002]}
    assert h["kvtier_load_seconds"] == {"": [0.001, 0.003]}
    for name in (*c, *g, *h):
        assert name in METRICS
    # a tier that is not configured has no gauge rather than a zero
    alone = worker_report(now, now, [], [], rank=0, bytes_per_token=10, tiers=("cpu",))
    assert "disk,0" not in alone.data["gauges"]["kvtier_tier_bytes"]
    assert alone.data["counters"] == {} and alone.data["histograms"] == {}


def registry_types(registry: CollectorRegistry) -> dict[type, object]:
    return {
        Counter: functools.partial(Counter, registry=registry),
        Gauge: functools.partial(Gauge, registry=registry),
        Histogram: functools.partial(Histogram, registry=registry),
    }


def test_prometheus_series_follow_the_reports() -> None:
    """Each report lands on the ``kvtier_*`` series with vLLM's engine labels; histograms use
    kvtier's buckets; a name or label count it does not know is skipped, not raised on."""
    registry = CollectorRegistry()
    config = SimpleNamespace(kv_transfer_config=None)  # vLLM's config; the metrics read nothing
    prom = KVTierPromMetrics(
        config, registry_types(registry), ["model_name", "engine"], {0: ["m", "0"]}
    )
    r = KVTierConnectorStats()
    r.count("kvtier_hit_tokens", 300, "disk")
    r.count("kvtier_lookups", 1)
    r.set("kvtier_tier_bytes", 123, "cpu", 0)
    r.observe("kvtier_load_seconds", [0.003, 0.2])
    prom.observe(r.data, 0)
    prom.observe(r.data, 0)
    prom.observe({"counters": {"kvtier_unknown": {"": 1}, "kvtier_hit_tokens": {"a,b": 1}}}, 0)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"model_name": "m", "engine": "0", **labels})

    assert value("kvtier_hit_tokens_total", source="disk") == 600
    assert value("kvtier_lookups_total") == 2
    assert value("kvtier_tier_bytes", tier="cpu", rank="0") == 123
    assert value("kvtier_load_seconds_count") == 4
    assert value("kvtier_load_seconds_bucket", le="0.005") == 2
    assert value("kvtier_load_seconds_bucket", le=str(LATENCY_BUCKETS[-1])) == 4


def test_throttle_lets_one_report_out_per_interval_unless_forced() -> None:
    throttle = Throttle(3600)
    assert throttle.due()
    assert not throttle.due()
    assert throttle.due(force=True)


DISK = {"local_disk": "/nonexistent/kvtier", "max_local_disk_size": 1}
REMOTE = {"remote_url": "redis://127.0.0.1:1"}


@pytest.mark.parametrize(
    ("settings", "memory", "local", "hits", "sources"),
    [
        ({}, 3, 3, {"cpu": 3}, {CacheHitSource.HOST: 3}),
        (DISK, 1, 3, {"cpu": 1, "disk": 2}, {CacheHitSource.HOST: 1, CacheHitSource.DISK: 2}),
        (
            REMOTE, 1, 1, {"cpu": 1, "remote": 2},
            {CacheHitSource.HOST: 1, CacheHitSource.EXTERNAL_UNSPECIFIED: 2},
        ),
        (
            {**DISK, **REMOTE}, 1, 2, {"cpu": 1, "disk": 1, "remote": 1},
            {
                CacheHitSource.HOST: 1, CacheHitSource.DISK: 1,
                CacheHitSource.EXTERNAL_UNSPECIFIED: 1,
            },
        ),
    ],
)  # fmt: skip
def test_hits_are_counted_by_where_they_are_stored(settings, memory, local, hits, sources) -> None:
    """A confirmed load of 3 chunks: the lookup says how many are in CPU memory and how many in
    the worker's own tiers (CPU or disk; the rest is remote), and the hit is counted by tier, in
    kvtier's report and in vLLM's own names; the report counts the lookup and its tokens once."""
    from kvtier.vllm.scheduler import KVTierScheduler

    s = KVTierScheduler(vllm_config(), {"chunk_size": CHUNK, **settings})
    s._lookup = Lookups((3 * CHUNK, memory * CHUNK, False), local=local * CHUNK)
    req = request("r", 4 * CHUNK)
    assert s.get_num_new_matched_tokens(req, 0) == (3 * CHUNK, memory < 3)
    s.update_state_after_alloc(req, blocks(list(range(16))), 3 * CHUNK)
    got_sources = s.get_external_cache_hit_sources(req, 3 * CHUNK)
    report = s.get_kv_connector_stats()
    assert report is not None
    assert report.data["counters"]["kvtier_hit_tokens"] == {k: v * CHUNK for k, v in hits.items()}
    assert got_sources == {k: v * CHUNK for k, v in sources.items()}
    assert report.data["counters"]["kvtier_lookups"] == {"": 1}
    assert report.data["counters"]["kvtier_lookup_tokens"] == {"": 4 * CHUNK}
    assert len(report.data["histograms"]["kvtier_lookup_seconds"][""]) == 1
    assert s.get_kv_connector_stats() is None, "a report is handed out once"
    # vLLM counted fewer tokens than kvtier planned: never a split that does not add up
    assert s.get_external_cache_hit_sources(req, 5) == {CacheHitSource.EXTERNAL_UNSPECIFIED: 5}


def test_tokens_a_load_could_not_fill_are_counted_by_the_tier_they_were_to_come_from() -> None:
    """A background load of 3 chunks (CPU, disk, remote) whose blocks fail from the middle of the
    disk chunk on: the report the load ends with counts the lost tokens by tier, once; a load
    whose blocks all arrived counts nothing; an output that does not report on the load yet
    leaves it alone."""
    from kvtier.vllm.scheduler import KVTierScheduler

    s = KVTierScheduler(vllm_config(), {"chunk_size": CHUNK, **DISK, **REMOTE})
    s._lookup = Lookups((3 * CHUNK, CHUNK, False), local=2 * CHUNK)
    req = request("r", 4 * CHUNK)
    assert s.get_num_new_matched_tokens(req, 0) == (3 * CHUNK, True)
    table = list(range(100, 164))  # 16-token blocks
    s.update_state_after_alloc(req, blocks(table), 3 * CHUNK)
    s.get_kv_connector_stats()
    bad = table[CHUNK // 16 + 4]  # the disk chunk's fifth block
    s.update_connector_output(SimpleNamespace(invalid_block_ids={bad}, finished_recving=set(),
                                              finished_sending=set()))  # fmt: skip
    assert s.get_kv_connector_stats() is None, "not this load's report yet (still receiving)"
    s.update_connector_output(SimpleNamespace(invalid_block_ids={bad}, finished_recving={"r"},
                                              finished_sending=set()))  # fmt: skip
    report = s.get_kv_connector_stats()
    assert report is not None
    assert report.data["counters"]["kvtier_failed_load_tokens"] == {
        "disk": CHUNK - 4 * 16, "remote": CHUNK,
    }  # fmt: skip
    s.update_connector_output(SimpleNamespace(invalid_block_ids={bad}, finished_recving={"r"},
                                              finished_sending=set()))  # fmt: skip
    again = s.get_kv_connector_stats()
    assert again is None or "kvtier_failed_load_tokens" not in again.data["counters"], "once"


def test_the_observability_doc_lists_every_series_with_its_kind_and_labels() -> None:
    """docs/observability.md's table names each series of METRICS once, with its kind and
    labels, and no series kvtier does not export."""
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "observability.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`kvtier_"):
            rows[cells[0].strip("`")] = (cells[1], cells[2].replace("`", ""))
    assert set(rows) == set(METRICS)
    for name, metric in METRICS.items():
        assert rows[name] == (metric.kind, ", ".join(metric.labels)), name
