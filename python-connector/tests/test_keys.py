"""Chunk keys: docs/key-vectors.json recomputed from the spec with the independent mmh3 package,
and the Java implementation checked against it through the bridge."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import mmh3
import numpy as np
import pytest

from kvtier import _jvm, keys
from kvtier.engine import key_extras

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


def spec_hashes(
    tokens: list[int], chunk: int, partial: bool, root: bytes = bytes(16), extras=()
) -> list[str]:
    """docs/keys.md, written out with mmh3:
    hash_{-1} = root, hash_i = MurmurHash3(hash_{i-1} || extra_i || le32 tokens)."""
    out, parent = [], root
    count = len(tokens) // chunk + (1 if partial and len(tokens) % chunk else 0)
    for c in range(count):
        part = tokens[c * chunk : (c + 1) * chunk]
        extra = extras[c] if c < len(extras) else bytes(16)
        parent = mmh3.hash_bytes(parent + extra + struct.pack(f"<{len(part)}i", *part), SEED)
        out.append(parent.hex())
    return out


def java_hashes(
    tokens: np.ndarray, chunk: int, partial: bool, words: np.ndarray | None = None
) -> list[str]:
    hasher = _jvm.java_class("io.kvtier.key.ChunkHasher")
    key = _jvm.java_class("io.kvtier.key.ChunkKey")
    h = hasher.hashes(
        _jvm.int_array(tokens), len(tokens), key_extras(words), chunk, partial, 2**31 - 1
    )
    return [str(key.hex(h[i], h[i + 1])) for i in range(0, len(h), 2)]


def vector_extras(vector: dict) -> tuple[bytes, list[bytes]]:
    if "root" not in vector:
        return bytes(16), []
    return bytes.fromhex(vector["root"]), [bytes.fromhex(h) for h in vector["chunk_extras"]]


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
    root, extras = vector_extras(vector)
    chunk, partial = vector["chunk_size"], vector["save_unfull_chunk"]
    assert spec_hashes(tokens, chunk, partial, root, extras) == expected
    words = keys.words(root, extras)
    assert java_hashes(np.array(tokens, dtype=np.int32), chunk, partial, words) == expected


@pytest.mark.parametrize(
    "vector", VECTORS["block_prefixes"], ids=lambda v: f"{v['chunk_size']}-{v['block_size']}"
)
def test_block_prefix_vectors_match_spec_and_java(vector):
    """Each block prefix of a chunk hashes like a partial chunk of that many tokens (mmh3, from
    the spec), the last one is the chunk's own hash, and Java computes the same."""
    tokens = tokens_of(vector)
    chunk, block = vector["chunk_size"], vector["block_size"]
    keyed = vector["keyed_tokens"]
    assert keyed == len(tokens) - len(tokens) % chunk % block
    root, extras = vector_extras(vector)
    hasher = _jvm.java_class("io.kvtier.key.ChunkHasher")
    key = _jvm.java_class("io.kvtier.key.ChunkKey")
    parent = root
    java_tokens = _jvm.int_array(np.array(tokens, dtype=np.int32))
    java_extras = key_extras(keys.words(root, extras))
    for c, expected in enumerate(vector["prefixes"]):
        part = tokens[c * chunk : min((c + 1) * chunk, keyed)]
        extra = extras[c] if c < len(extras) else bytes(16)
        spec = [
            mmh3.hash_bytes(parent + extra + struct.pack(f"<{k}i", *part[:k]), SEED).hex()
            for k in range(block, len(part) + 1, block)
        ]
        assert spec == expected
        java_parent = None if c == 0 else _jvm.long_array(np.frombuffer(parent, dtype="<i8"))
        p = hasher.blockPrefixes(
            java_parent, java_extras, c, java_tokens, c * chunk, len(part), block
        )
        assert [str(key.hex(p[i], p[i + 1])) for i in range(0, len(p), 2)] == expected
        parent = bytes.fromhex(expected[-1])
    assert [p[-1] for p in vector["prefixes"]] == spec_hashes(
        tokens[:keyed], chunk, True, root, extras
    )


def _vllm_keys(keys_json: list) -> list[tuple]:
    """Extra keys as vLLM returns them: prompt-embeds digests are bytes (hex in the vectors)."""
    return [
        tuple(
            bytes.fromhex(v) if k[0] == "prompt_embeds" and i == 1 else v for i, v in enumerate(k)
        )
        for k in keys_json
    ]


@pytest.mark.parametrize("vector", VECTORS["extra_digests"], ids=lambda v: v["keys"][0][0])
def test_extra_digests_follow_the_spec(vector):
    """A chunk's extra digest is SHA-256 of the compact JSON of vLLM's extra keys, cut to 16."""
    assert keys.digest(_vllm_keys(vector["keys"])).hex() == vector["digest"]


def test_epoch_roots_follow_the_spec():
    for v in VECTORS["epochs"]:
        assert keys.epoch_root(v["epoch"]).hex() == v["root"]


def test_extras_tell_apart_what_vllm_tells_apart():
    """Different adapters, paths, salts, images, image offsets and embeddings all give different
    digests; no extra keys give the zero digest; words() drops what means nothing."""
    cases = [
        [("lora", "a", "/p")],
        [("lora", "a", "/q")],
        [("lora", "b", "/p")],
        [("cache_salt", "s1")],
        [("cache_salt", "s2")],
        [("mm", "img1", 0)],
        [("mm", "img1", 16)],
        [("mm", "img2", 0)],
        [("prompt_embeds", b"\1" * 32)],
        [("prompt_embeds", b"\2" * 32)],
    ]
    digests = {keys.digest(c) for c in cases}
    assert len(digests) == len(cases) and keys.ZERO not in digests
    assert keys.digest(None) == keys.digest([]) == keys.ZERO
    assert keys.words(keys.ZERO, [keys.ZERO, keys.ZERO]) is None
    w = keys.words(keys.ZERO, [keys.ZERO, keys.digest(cases[0]), keys.ZERO])
    assert w is not None and w.dtype == np.int64 and len(w) == 6


@pytest.mark.parametrize(
    "bad",
    [[("watermark", "x")], [("lora", None, "/p")], [("mm", "img", 1.5)], ["lora"], [()]],
    ids=["unknown-tag", "none-value", "float-value", "not-a-tuple", "empty"],
)
def test_unknown_extra_keys_are_refused_not_guessed(bad):
    """An extra key kvtier does not know makes the request unkeyable, never a guessed key."""
    with pytest.raises(keys.UnkeyableRequest):
        keys.digest(bad)


def test_unkeyable_message_does_not_show_the_values():
    """The refusal names the key's kind, not its values (a cache salt is a tenant's secret)."""
    with pytest.raises(keys.UnkeyableRequest) as e:
        keys.digest([("cache_salt", "hunter2"), ("secret_kind", "hunter2")])
    assert "hunter2" not in str(e.value) and "secret_kind" in str(e.value)


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
