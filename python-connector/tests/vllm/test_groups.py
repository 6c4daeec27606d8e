"""Which KV cache groups kvtier serves (``kvtier.vllm.groups``), with vLLM's own spec objects."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "vllm", reason="vLLM (CPU) is not installed; scripts/lib/vllm-env.sh installs it"
)
torch = pytest.importorskip("torch", reason="torch comes with vLLM")

from vllm.v1 import kv_cache_interface as kv  # noqa: E402

from kvtier import ConfigError  # noqa: E402
from kvtier.vllm.groups import FULL, FULL_ATTENTION, SLIDING, Group, KvGroups, classify  # noqa: E402

ATTN = {"num_kv_heads": 2, "head_size": 64, "dtype": torch.float32}


def config(*groups: tuple[list[str], object]) -> kv.KVCacheConfig:
    return kv.KVCacheConfig(
        num_blocks=16,
        kv_cache_tensors=[],
        kv_cache_groups=[kv.KVCacheGroupSpec(names, spec) for names, spec in groups],
    )


def layers(*indices: int) -> list[str]:
    return [f"model.layers.{i}.self_attn.attn" for i in indices]


def test_full_attention_and_no_config_are_served_as_full_attention() -> None:
    assert classify(None) == FULL_ATTENTION
    got = classify(config((layers(0, 1), kv.FullAttentionSpec(128, **ATTN))))
    assert got == KvGroups((Group(FULL, None, tuple(layers(0, 1))),))
    assert not got.sliding and got.windows() == [0]
    assert got.layer_groups(layers(0, 1)) == [0, 0]


def test_sliding_and_full_layers_merged_by_vllm_are_full_attention() -> None:
    """vLLM's hybrid manager off: a mixed model's layers form one full-attention group that
    carries the window and keeps every block."""
    merged = kv.FullAttentionSpec(128, sliding_window=64, **ATTN)
    assert classify(config((layers(0, 1, 2, 3), merged))).windows() == [0]


def test_a_model_whose_layers_all_slide_is_served_with_its_window() -> None:
    got = classify(config((layers(0, 1), kv.SlidingWindowSpec(128, sliding_window=200, **ATTN))))
    assert got == KvGroups((Group(SLIDING, 200, tuple(layers(0, 1))),)) and got.sliding
    uniform = kv.UniformTypeKVCacheSpecs(
        128,
        {
            "a": kv.SlidingWindowSpec(128, sliding_window=300, **ATTN),
            "b": kv.SlidingWindowSpec(128, sliding_window=200, **ATTN),
        },
    )
    # The widest window: a save keeps every token some layer's window needs.
    assert classify(config((["a", "b"], uniform))).windows() == [300]


def test_sliding_and_full_groups_of_vllms_hybrid_manager_are_served_each_with_its_layers() -> None:
    """With HMA on, vLLM gives a model mixing the two kinds one group of each (layers
    interleaved); the worker maps its registered tensors to them."""
    got = classify(
        config(
            (layers(0, 2), kv.SlidingWindowSpec(128, sliding_window=64, **ATTN)),
            (layers(1, 3), kv.FullAttentionSpec(128, **ATTN)),
        )
    )
    assert got.sliding and got.count == 2
    assert got.windows() == [64, 0] and got.sliding_windows() == [(0, 64)]
    assert got.layer_groups(layers(0, 1, 2, 3)) == [0, 1, 0, 1]
    with pytest.raises(ConfigError, match="outside its KV cache groups"):
        got.layer_groups(layers(0, 1, 2, 3, 4))
    # A layer reading another's KV cache (vLLM's KV sharing) is in its target's group.
    shared = {layers(4)[0]: layers(1)[0]}
    assert got.layer_groups(layers(0, 1, 2, 3, 4), shared) == [0, 1, 0, 1, 1]
    with pytest.raises(ConfigError, match=r"whose layers \['model.layers.3"):
        got.layer_groups(layers(0, 1, 2))


@pytest.mark.parametrize(
    ("groups", "named"),
    [
        (
            [
                (layers(0, 2), kv.SlidingWindowSpec(64, sliding_window=64, **ATTN)),
                (layers(1, 3), kv.FullAttentionSpec(128, **ATTN)),
            ],
            [
                "group 0: sliding window (2 layers",
                "group 1: full attention (2 layers",
                "block sizes differ (64, 128 tokens)",
            ],
        ),
        (
            [
                (layers(0, 2), kv.MambaSpec(128, shapes=((4, 8),), dtypes=(torch.float32,))),
                (layers(1, 3), kv.FullAttentionSpec(128, **ATTN)),
            ],
            ["group 0: MambaSpec (2 layers", "group 1: full attention (2 layers", "state"],
        ),
        (
            [(layers(0), kv.MambaSpec(128, shapes=((4, 8),), dtypes=(torch.float32,)))],
            [
                "group 0: MambaSpec (1 layers: model.layers.0.self_attn.attn",
                "tensors of shape (3, 5)",
            ],
        ),
        (
            [
                (
                    layers(0, 1, 2, 3),
                    kv.ChunkedLocalAttentionSpec(128, attention_chunk_size=64, **ATTN),
                )
            ],
            ["group 0: ChunkedLocalAttentionSpec (4 layers: ", "and 1 more"],
        ),
    ],
    ids=["block sizes differ", "mamba hybrid", "mamba", "chunked local"],
)
def test_groups_kvtier_does_not_serve_are_refused_naming_each(
    groups: list[tuple[list[str], object]], named: list[str]
) -> None:
    shapes = {name: (3, 5) for g, _ in groups for name in g}
    with pytest.raises(ConfigError) as refused:
        classify(config(*groups), shapes)
    message = str(refused.value)
    for part in named:
        assert part in message, message
    assert "Start vLLM without kvtier for this model" in message
