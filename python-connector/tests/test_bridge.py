"""The Java facades through their typed wrappers (kvtier._bridge): descriptors built from named
fields are checked in Java, and a good set of fields builds what the positional constructors
built, so keys stay what docs/key-vectors.json says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import kvtier
from kvtier import _bridge, _jvm
from kvtier.engine import Engine, Layout
from kvtier.vllm.layouts import KvCacheLayout

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "key-vectors.json").read_text()
)

# The documented namespaces (docs/key-vectors.json, in order) as named fields.
NAMESPACES = [
    {
        "model_id": "meta-llama/Llama-3.1-8B", "kv_dtype": "bfloat16", "num_layers": 32,
        "kv_heads_per_rank": 8, "head_size": 128, "tp_size": 1, "tp_rank": 0,
        "chunk_tokens": 256, "mla": False, "chunk_order": "token-major", "first_layer": 0,
        "kv_groups": "",
    },
    {
        "model_id": "tiny", "kv_dtype": "bfloat16", "num_layers": 2, "kv_heads_per_rank": 2,
        "head_size": 64, "tp_size": 2, "tp_rank": 1, "chunk_tokens": 256, "mla": False,
        "chunk_order": "head-major", "first_layer": 0, "kv_groups": "",
    },
    {
        "model_id": "meta-llama/Llama-3.1-8B", "kv_dtype": "bfloat16", "num_layers": 16,
        "kv_heads_per_rank": 8, "head_size": 128, "tp_size": 1, "tp_rank": 0,
        "chunk_tokens": 256, "mla": False, "chunk_order": "token-major", "first_layer": 16,
        "kv_groups": "",
    },
    {
        "model_id": "tiny", "kv_dtype": "float32", "num_layers": 4, "kv_heads_per_rank": 2,
        "head_size": 64, "tp_size": 1, "tp_rank": 0, "chunk_tokens": 256, "mla": False,
        "chunk_order": "head-major", "first_layer": 0, "kv_groups": "sliding200:0,2+full:1,3",
    },
]  # fmt: skip

LAYOUT = KvCacheLayout(
    kind="flash-attn", num_blocks=10, block_size=16, num_heads=4, head_size=64, element_bytes=2,
    dtype="bfloat16", device="cpu", kv_count=2, kv_stride=40960, block_stride=4096,
    slot_stride=256, head_stride=64,
)  # fmt: skip


def layout_fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "num_blocks": 10, "block_size": 16, "kv_count": 2, "num_heads": 4, "head_size": 64,
        "element_bytes": 2, "kv_stride": 40960, "block_stride": 4096, "slot_stride": 256,
        "head_stride": 64,
    }  # fmt: skip
    fields.update(changes)
    return fields


@pytest.mark.parametrize("index", range(len(NAMESPACES)))
def test_namespace_from_fields_is_the_documented_one(index: int) -> None:
    """Named fields build the namespace the positional constructor built: same canonical text
    and id as docs/key-vectors.json, so every key stays byte-identical."""
    fields = NAMESPACES[index]
    ns = _bridge.worker.key_namespace(fields)
    positional = _jvm.new("io.kvtier.key.KeyNamespace", *fields.values()).java
    assert ns.equals(positional)
    assert str(ns.canonical()) == VECTORS["namespaces"][index]["canonical"]
    assert int(ns.id()) == VECTORS["namespaces"][index]["id"]


def test_engine_keys_its_chunks_under_the_documented_namespace() -> None:
    """An Engine's namespace, built from its Layout through the bridge, is the documented one."""
    layout = Layout("tiny", "bfloat16", 2, 2, 64, 2 * 2 * 2 * 64 * 2, tp_size=2, tp_rank=1,
                    chunk_order="head-major")  # fmt: skip
    with Engine(layout, {"chunk_size": 256, "max_local_cpu_size": 0.01}) as engine:
        assert str(engine.java.namespace().canonical()) == VECTORS["namespaces"][1]["canonical"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tp_sise": 2}, r"KeyNamespace has no field tp_sise; its fields are \[model_id"),
        ({"model_id": 32, "num_layers": "tiny"}, r"field model_id must be a string, got 32"),
        ({"num_layers": "tiny"}, r"field num_layers must be an integer, got tiny"),
        ({"first_layer": -1}, r"KeyNamespace field first_layer must be >= 0, got -1"),
        ({"head_size": 0}, r"KeyNamespace field head_size must be >= 1, got 0"),
        ({"mla": 0}, r"field mla must be a boolean, got 0"),
        ({"tp_size": True}, r"field tp_size must be an integer, got true"),
        ({"tp_rank": 2}, r"tpRank 2 must be < tpSize 2"),
    ],
)
def test_bad_namespace_field_is_named(change: dict[str, object], message: str) -> None:
    """An unknown, mistyped, swapped or out-of-range field is a JavaValueError naming it."""
    with pytest.raises(kvtier.JavaValueError, match=message):
        _bridge.worker.key_namespace({**NAMESPACES[1], **change})


def test_missing_namespace_field_is_named() -> None:
    """A namespace without tp_rank is refused, naming tp_rank."""
    fields = {k: v for k, v in NAMESPACES[1].items() if k != "tp_rank"}
    with pytest.raises(kvtier.JavaValueError, match="KeyNamespace field tp_rank is missing"):
        _bridge.worker.key_namespace(fields)


def test_layout_from_fields_equals_the_positional_one() -> None:
    """KvCacheLayout.paged_layout() builds what PagedLayout's positional constructor built."""
    positional = _jvm.new(
        "io.kvtier.transfer.PagedLayout", 10, 16, 2, 4, 64, 2, 40960, 4096, 256, 64
    ).java
    assert LAYOUT.paged_layout().equals(positional)
    assert _bridge.worker.paged_layout(layout_fields()).equals(positional)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kv_count": 4, "num_heads": 2}, r"PagedLayout field kv_count must be from 1 to 2, got 4"),
        ({"kv_stride": -1}, r"PagedLayout field kv_stride must be >= 0, got -1"),
        ({"slot_stride": 0}, r"PagedLayout field slot_stride must be >= 1, got 0"),
        ({"blocks": 10}, r"PagedLayout has no field blocks"),
        ({"element_bytes": 2.0}, r"field element_bytes must be an integer, got 2.0"),
    ],
)
def test_bad_layout_field_is_named(change: dict[str, object], message: str) -> None:
    """A swapped, unknown, mistyped or negative layout field is a JavaValueError naming it."""
    with pytest.raises(kvtier.JavaValueError, match=message):
        _bridge.worker.paged_layout(layout_fields(**change))


def test_missing_layout_field_is_named() -> None:
    """A layout without head_stride is refused, naming head_stride."""
    fields = layout_fields()
    del fields["head_stride"]
    with pytest.raises(kvtier.JavaValueError, match="PagedLayout field head_stride is missing"):
        _bridge.worker.paged_layout(fields)


def test_scheduler_settings_come_from_the_java_loader() -> None:
    """The scheduler's facade applies settings over the defaults and refuses unknown keys."""
    config = _bridge.scheduler.load_config({"chunk_size": 64, "save_unfull_chunk": True})
    assert int(config.chunkTokens()) == 64
    assert bool(config.saveUnfullChunk())
    with pytest.raises(kvtier.JavaValueError, match="chunk_sise") as info:
        _bridge.scheduler.load_config({"chunk_sise": 64})
    assert info.value.java_class == "io.kvtier.config.ConfigException"


@pytest.mark.parametrize(
    ("settings", "check"),
    [
        ({"extra_config": {"use_odirect": True}}, lambda c: bool(c.useODirect())),
        (
            {"local_disk": ["file:///tmp/kv-a/", "/tmp/kv-b"], "max_local_disk_size": 1},
            lambda c: [str(p) for p in c.localDiskPaths()] == ["/tmp/kv-a", "/tmp/kv-b"],
        ),
        (
            {"local_disk": ("/tmp/kv-a",), "max_local_disk_size": np.float64(0.5)},
            lambda c: int(c.maxLocalDiskBytes()) == 2**29,
        ),
        ({"chunk_size": np.int64(64)}, lambda c: int(c.chunkTokens()) == 64),
        (
            {"local_cpu": np.bool_(False), "remote_url": "redis://cache:6379"},
            lambda c: not bool(c.localCpu()),
        ),
        ({"p2p_init_ports": [8200]}, lambda c: "p2p_init_ports" in str(c.unsupportedKeys())),
    ],
)
def test_settings_from_python_of_any_shape_load_as_from_a_file(settings, check) -> None:
    """Lists, tuples, nested mappings and numpy scalars in ``kv_connector_extra_config`` load as
    the same values written in a YAML file would."""
    assert check(_bridge.scheduler.load_config(settings))
    assert check(_bridge.worker.load_config(settings))


def test_settings_of_the_wrong_shape_are_refused_naming_key_and_value() -> None:
    with pytest.raises(kvtier.JavaValueError, match="chunk_size") as info:
        _bridge.scheduler.load_config({"chunk_size": [1, 2]})
    assert info.value.java_class == "io.kvtier.config.ConfigException"
    with pytest.raises(kvtier.ConfigError, match=r"extra_config\.use_odirect=\{1\} is a set"):
        _bridge.scheduler.load_config({"extra_config": {"use_odirect": {1}}})
