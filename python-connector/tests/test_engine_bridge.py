"""The Java engine driven from Python as the connector will: primitives, arrays and addresses."""

from __future__ import annotations

import numpy as np
import pytest
from waiting import wait_until

import kvtier
from kvtier import _jvm
from kvtier.engine import Engine, Layout

CHUNK = 32
BYTES_PER_TOKEN = 256


def open_engine(**settings: object):
    config = _jvm.java_class("io.kvtier.config.KvTierConfig").of({"chunk_size": CHUNK, **settings})
    ns = _jvm.new("io.kvtier.key.KeyNamespace", "tiny", "bfloat16", 2, 2, 32, 1, 0, CHUNK, False)
    alloc = _jvm.java_class("io.kvtier.memory.MmapAllocator").INSTANCE
    return _jvm.new("io.kvtier.engine.KvEngine", config, ns.java, BYTES_PER_TOKEN, alloc)


def chunks_of(tokens: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    n = tokens // CHUNK
    return [rng.integers(0, 256, CHUNK * BYTES_PER_TOKEN, dtype=np.uint8) for _ in range(n)]


def addresses(arrays: list[np.ndarray]):
    return _jvm.long_array(np.array([a.ctypes.data for a in arrays], dtype=np.int64))


def test_store_lookup_retrieve_round_trip_byte_exact():
    """numpy chunks stored through the Python Engine come back byte for byte."""
    layout = Layout("tiny", "bfloat16", 2, 2, 32, bytes_per_token=BYTES_PER_TOKEN)
    with Engine(layout, {"chunk_size": CHUNK}) as engine:
        assert engine.chunk_bytes == CHUNK * BYTES_PER_TOKEN
        tokens = np.random.default_rng(1).integers(0, 150_000, 4 * CHUNK + 9, dtype=np.int32)
        src = chunks_of(len(tokens), 1)
        assert engine.lookup(tokens) == 0
        assert engine.store(tokens, src) == 4
        assert engine.lookup(tokens) == 4 * CHUNK
        assert engine.lookup(tokens[: 2 * CHUNK + 3]) == 2 * CHUNK, "a shared prefix hits"

        dst = [np.zeros_like(a) for a in src]
        assert engine.retrieve(tokens, dst) == 4
        for a, b in zip(src, dst, strict=True):
            assert np.array_equal(a, b)
        stats = engine.stats()
        assert stats["puts"] == 4
        assert stats["hit_tokens"] >= 6 * CHUNK


def test_disk_tier_survives_a_new_engine(tmp_path):
    """With local_disk, a second engine (as after a restart) finds and loads the chunks."""
    layout = Layout("tiny", "bfloat16", 2, 2, 32, bytes_per_token=BYTES_PER_TOKEN)
    settings = {"chunk_size": CHUNK, "local_disk": str(tmp_path), "max_local_disk_size": 0.01}
    tokens = np.arange(3 * CHUNK, dtype=np.int32)
    src = chunks_of(len(tokens), 3)
    with Engine(layout, settings) as engine:
        engine.store(tokens, src)
        wait_until(lambda: engine.stats()["disk_puts"] == 3, "3 chunks written to disk")
    with Engine(layout, settings) as engine:
        assert engine.lookup(tokens) == 3 * CHUNK
        dst = [np.zeros_like(a) for a in src]
        assert engine.retrieve(tokens, dst) == 3
        assert all(np.array_equal(a, b) for a, b in zip(src, dst, strict=True))


def test_read_only_output_buffer_is_refused():
    """retrieve never writes into a buffer Python marked read-only."""
    layout = Layout("tiny", "bfloat16", 2, 2, 32, bytes_per_token=BYTES_PER_TOKEN)
    with Engine(layout, {"chunk_size": CHUNK}) as engine:
        out = np.zeros(CHUNK * BYTES_PER_TOKEN, np.uint8)
        out.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            engine.retrieve(np.arange(CHUNK, dtype=np.int32), [out])


def test_two_phase_store_writes_into_engine_memory():
    """prepareStore hands out slot addresses; bytes written there from Python are what loads."""
    from kvtier import hostmem

    engine = open_engine()
    try:
        tokens = np.arange(2 * CHUNK, dtype=np.int32)
        jt = _jvm.int_array(tokens)
        prepared = list(engine.prepareStore(jt, len(tokens), 0))
        handle, slots = prepared[0], prepared[1:]
        src = chunks_of(len(tokens), 2)
        for addr, data in zip(slots, src, strict=True):
            _jvm.java_class("io.kvtier.memory.HostMemory").copy(data.ctypes.data, addr, data.nbytes)
        assert engine.lookup(jt, len(tokens)) == 0, "invisible until completed"
        assert engine.completeStore(handle, True) == 2
        loaded = list(engine.prepareLoad(jt, len(tokens), 10))
        assert len(loaded) == 3
        for addr, data in zip(loaded[1:], src, strict=True):
            out = np.zeros_like(data)
            _jvm.java_class("io.kvtier.memory.HostMemory").copy(addr, out.ctypes.data, out.nbytes)
            assert np.array_equal(out, data)
        engine.completeLoad(loaded[0])
        assert hostmem.crc32(src[0]) == hostmem.crc32(src[0].copy())
    finally:
        engine.close()


def test_bad_config_reaches_python_naming_key_and_value():
    """A malformed setting is a ValueError that keeps the Java message."""
    with pytest.raises(kvtier.JavaValueError, match=r"cache_policy=MRU") as info:
        open_engine(cache_policy="MRU")
    assert info.value.java_class == "io.kvtier.config.ConfigException"


def test_wrong_address_count_is_refused():
    """Fewer source addresses than chunks is an error, not a partial store."""
    engine = open_engine()
    try:
        tokens = _jvm.int_array(np.arange(3 * CHUNK, dtype=np.int32))
        with pytest.raises(kvtier.JavaValueError, match="srcAddresses has 1 entries"):
            engine.store(tokens, 3 * CHUNK, _jvm.long_array(np.array([1], dtype=np.int64)))
        assert engine.lookup(tokens, 3 * CHUNK) == 0
    finally:
        engine.close()
