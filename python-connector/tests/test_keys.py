"""Chunk keys: docs/key-vectors.json recomputed from the spec with the independent mmh3 package,
and the Java implementation checked against it through the bridge."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import mmh3
import numpy as np
import pytest

from kvtier import _jvm

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "key-vectors.json").read_text()
)
SEED = VECTORS["seed"]


def tokens_of(v: dict) -> list[int]:
    if "tokens" in v:
        return v["tokens"]
    if "tokens_range" in v:
        return list(range(*v["tokens_range"]))
    a = v["tokens_affine"]
    return [i * a["mul"] % a["mod"] for i in range(a["count"])]


def spec_hashes(tokens: list[int], chunk: int, partial: bool) -> list[str]:
    """docs/keys.md, written out with mmh3: hash_i = MurmurHash3(hash_{i-1} || le32 tokens)."""
    out, parent = [], b"\0" * 16
    count = len(tokens) // chunk + (1 if partial and len(tokens) % chunk else 0)
    for c in range(count):
        part = tokens[c * chunk : (c + 1) * chunk]
        parent = mmh3.hash_bytes(parent + struct.pack(f"<{len(part)}i", *part), SEED)
        out.append(parent.hex())
    return out


def java_hashes(tokens: np.ndarray, chunk: int, partial: bool) -> list[str]:
    hasher = _jvm.java_class("io.kvtier.key.ChunkHasher")
    key = _jvm.java_class("io.kvtier.key.ChunkKey")
    h = hasher.hashes(_jvm.int_array(tokens), len(tokens), chunk, partial, 2**31 - 1)
    return [str(key.hex(h[i], h[i + 1])) for i in range(0, len(h), 2)]


def test_seed_is_ascii_kvti():
    """The documented seed is the bytes 'kvti'."""
    assert SEED == int.from_bytes(b"kvti", "big")


@pytest.mark.parametrize("vector", VECTORS["murmur3"], ids=lambda v: v["input_hex"][:8] or "empty")
def test_murmur3_vectors_match_mmh3(vector):
    """Each MurmurHash3 digest in the vectors file is what mmh3 computes."""
    assert mmh3.hash_bytes(bytes.fromhex(vector["input_hex"]), SEED).hex() == vector["digest"]


@pytest.mark.parametrize("vector", VECTORS["chunks"], ids=lambda v: str(v["chunk_size"]))
def test_chunk_vectors_match_spec_and_java(vector):
    """Every chunk vector follows from the written spec, and Java computes the same."""
    tokens = tokens_of(vector)
    expected = vector["hashes"]
    assert spec_hashes(tokens, vector["chunk_size"], vector["save_unfull_chunk"]) == expected
    got = java_hashes(
        np.array(tokens, dtype=np.int32), vector["chunk_size"], vector["save_unfull_chunk"]
    )
    assert got == expected


def test_java_matches_spec_on_random_prompts():
    """Random prompts of awkward lengths hash identically in Java and in the spec."""
    rng = np.random.default_rng(0)
    for n in (1, 255, 256, 257, 1000, 4099):
        tokens = rng.integers(0, 2**31 - 1, size=n, dtype=np.int32)
        for chunk, partial in ((256, False), (256, True), (7, True)):
            assert java_hashes(tokens, chunk, partial) == spec_hashes(
                tokens.tolist(), chunk, partial
            )


@pytest.mark.parametrize("vector", VECTORS["namespaces"], ids=lambda v: v["canonical"][-11:])
def test_namespace_ids_follow_the_spec(vector):
    """A namespace id is h1 of MurmurHash3 of its canonical text, as a signed 64-bit integer."""
    digest = mmh3.hash_bytes(vector["canonical"].encode(), SEED)
    assert int.from_bytes(digest[:8], "little", signed=True) == vector["id"]
