"""What parallelism changes for the worker side: pipeline stages key their layers apart, and the
disk budget is the instance's, shared by its ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vllm", reason="the worker side reads vLLM's layer names")

from kvtier import _jvm
from kvtier.engine import Engine, Layout
from kvtier.vllm.worker import _first_layer, rank_settings

CHUNK = 32
BYTES_PER_TOKEN = 256


def stage(first_layer: int) -> Layout:
    """A pipeline stage of 16 layers starting at ``first_layer``."""
    return Layout(
        "llama", "bfloat16", 16, 2, 64, bytes_per_token=BYTES_PER_TOKEN, first_layer=first_layer
    )


def test_first_layer_is_read_from_vllms_layer_names() -> None:
    names = [f"model.layers.{i}.self_attn.attn" for i in range(16, 32)]
    assert _first_layer(names) == 16
    assert _first_layer(["model.layers.0.self_attn.attn"]) == 0


def test_pipeline_stages_with_equal_layer_counts_share_no_chunks(tmp_path: Path) -> None:
    """Stage 0 (layers 0-15) stores a prompt on a disk both stages use; stage 1 (layers 16-31),
    whose KV for the same tokens is different bytes, misses it, while another stage 0 hits."""
    settings = {"chunk_size": CHUNK, "local_disk": str(tmp_path), "max_local_disk_size": 0.01}
    tokens = np.arange(4 * CHUNK, dtype=np.int32)
    src = [np.full(CHUNK * BYTES_PER_TOKEN, i, dtype=np.uint8) for i in range(4)]
    with Engine(stage(0), settings) as first:
        assert first.store(tokens, src) == 4
        assert first.java.tiers().awaitIdle(60_000)
    with Engine(stage(16), settings) as second:
        assert second.lookup(tokens) == 0
    with Engine(stage(0), settings) as again:
        assert again.lookup(tokens) == 4 * CHUNK, "the disk tier does hold the chunks"


def config(settings: dict) -> object:
    return _jvm.java_class("io.kvtier.config.KvTierConfig").load(settings)


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_disk_budget_is_the_instances_split_over_its_ranks(world: int) -> None:
    """max_local_disk_size=2 (GB) with N ranks gives each rank 2/N GB, so the ranks together
    never use more than configured (one rank uses it all)."""
    settings = {"local_disk": "/tmp/unused", "max_local_disk_size": 2}
    per_rank = config(rank_settings(settings, config(settings), world)).maxLocalDiskBytes()
    assert abs(per_rank - (2 << 30) // world) < 1024
    assert per_rank * world <= 2 << 30


def test_no_disk_tier_leaves_settings_alone() -> None:
    settings = {"chunk_size": CHUNK}
    assert rank_settings(settings, config(settings), 4) is settings
