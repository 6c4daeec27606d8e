"""kvtier's KV events: chunks stored in and removed from its CPU and disk tiers, published by
vLLM's own ZMQ publisher and named by vLLM's own block hashes.

The pieces (hash encoding, chunk tags, decoding, waiting for every worker) are checked alone
first; then a real ``vllm serve`` with ``--kv-events-config`` and a ZMQ subscriber: a prompt's
chunks must be announced in kvtier's CPU tier and disk tier with exactly the block hashes, parents
and token ids vLLM announced for its own blocks of that prompt, and their eviction from the CPU
tier by a second prompt must be announced too.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "vllm", reason="vLLM (CPU) is not installed; scripts/lib/vllm-env.sh installs it"
)

from vllm.distributed.kv_events import BlockRemoved, BlockStored

from kvtier.vllm import events

pytestmark = [pytest.mark.vllm]

ROOT = Path(__file__).parents[3]


def test_hashes_survive_the_trip_as_ints_and_as_bytes() -> None:
    from vllm.v1.core.kv_cache_utils import BlockHash

    raw = [BlockHash(bytes(range(i, i + 32))) for i in range(5)]
    words = events.encode_hashes(raw)
    assert words.dtype == np.int64
    expected_ints = [int.from_bytes(h, "big") & (2**64 - 1) for h in raw]  # vLLM's default
    assert [events._decode_hash(w) for w in words] == expected_ints


def test_bytes_hashes_are_carried_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm.v1.core import kv_cache_utils

    monkeypatch.setattr(kv_cache_utils, "maybe_convert_block_hash", lambda h: bytes(h))
    raw = [bytes(range(i, i + 32)) for i in range(3)]
    words = events.encode_hashes(raw)
    assert words.shape == (3, 4)
    assert [events._decode_hash(w) for w in words] == raw


def test_tags_name_each_chunks_blocks_parent_and_tokens_and_decode_to_vllm_events() -> None:
    chunk, block = 8, 4
    tokens = np.arange(100, 120, dtype=np.int32)  # 2 chunks and a tail of 4 tokens
    hashes = np.arange(1, 6, dtype=np.int64).reshape(-1, 1)  # 5 whole blocks
    tags = events.chunk_tags(tokens, hashes, 1, 20, chunk, block, lora_id=3)
    assert tags[0] is None, "chunk 0 was saved before: not tagged again"
    packed = []
    for medium, kind in ((0, events.STORED), (1, events.STORED), (0, events.REMOVED)):
        for tag in tags[1:]:
            packed += [kind << 32 | medium << 16 | len(tag), *tag.tolist()]
    got = events.decode(np.array(packed, dtype=np.int64), block, {3: "adapter"})
    assert got[0] == BlockStored(
        block_hashes=[3, 4],
        parent_block_hash=2,
        token_ids=list(range(108, 116)),
        block_size=block,
        lora_id=3,
        medium="CPU",
        lora_name="adapter",
    )
    assert got[1].block_hashes == [5] and got[1].token_ids == list(range(116, 120))
    assert got[1].parent_block_hash == 4
    assert [e.medium for e in got[2:4]] == ["STORAGE", "STORAGE"]
    assert got[4] == BlockRemoved(block_hashes=[3, 4], medium="CPU")
    assert got[5] == BlockRemoved(block_hashes=[5], medium="CPU")


def test_an_event_is_published_once_every_worker_reported_it() -> None:
    a = BlockStored(
        block_hashes=[1], parent_block_hash=None, token_ids=[1], block_size=1, lora_id=None,
        medium="CPU", lora_name=None,
    )  # fmt: skip
    b = BlockRemoved(block_hashes=[1], medium="CPU")
    publisher = events.Publisher(workers=2)
    step = events.KVTierKVEvents([a, b])  # rank 0 reports both
    publisher.add(step)
    assert list(publisher.take()) == []
    late = events.KVTierKVEvents([])  # rank 0 idle; rank 1 reports one step later
    late.add_events([a, b])
    publisher.add(late)
    assert list(publisher.take()) == [a, b]
    single = events.Publisher(workers=1)
    single.add(events.KVTierKVEvents([b, a]))
    assert list(single.take()) == [b, a], "one worker: in its order"


# ---- a real server ------------------------------------------------------------------------------

CHUNK = 256
BLOCK = 32
DTYPE = "float32"


class Subscriber:
    """Collects the event batches of vLLM's ZMQ publisher in a background thread."""

    def __init__(self, endpoint: str, topic: str) -> None:
        import msgspec
        import zmq
        from vllm.distributed.kv_events import KVEventBatch

        self._decoder = msgspec.msgpack.Decoder(type=KVEventBatch)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt_string(zmq.SUBSCRIBE, topic)
        self._sock.setsockopt(zmq.RCVTIMEO, 200)
        self._sock.connect(endpoint)
        self.events: list[Any] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import zmq

        while not self._stop:
            try:
                _, _, payload = self._sock.recv_multipart()
            except zmq.Again:
                continue
            batch = self._decoder.decode(payload)
            with self._lock:
                self.events.extend(batch.events)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self._sock.close(0)
        self._ctx.term()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _complete(url: str, prompt: list[int]) -> None:
    model = json.load(urllib.request.urlopen(f"{url}/v1/models"))["data"][0]["id"]
    body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0}
    request = urllib.request.Request(
        f"{url}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        json.load(response)


def _kvtier_events(got: list[Any], kind: type, medium: str) -> list[Any]:
    return [e for e in got if isinstance(e, kind) and e.medium == medium]


@pytest.mark.slow
def test_a_router_sees_kvtiers_tiers_with_vllms_own_block_hashes(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    sys.path.insert(0, str(ROOT / "python-connector" / "tests"))
    import tiny_model
    import vllm_server
    from waiting import wait_until

    model = str(tiny_model.build(spec=tiny_model.SMALL))
    per_token = tiny_model.kv_bytes_per_token(tiny_model.SMALL, DTYPE)
    slots = 6  # one prompt's 5 chunks fit; a second prompt's evict the first's
    settings = {
        "max_local_cpu_size": slots * CHUNK * per_token / 2**30,
        "cache_policy": "LRU",
        "local_disk": str(tmp_path / "kv"),
        "max_local_disk_size": 1,
    }
    port = _free_port()
    kv_events = {
        "enable_kv_cache_events": True,
        "publisher": "zmq",
        "endpoint": f"tcp://*:{port}",
        "topic": "kv",
    }
    args = ["--block-size", str(BLOCK), "--max-model-len", "2048"]
    args += ["--kv-cache-memory-bytes", str(256 << 20), "--kv-events-config", json.dumps(kv_events)]
    first = tiny_model.prompt(4 * CHUNK + 100, seed=21, spec=tiny_model.SMALL)
    second = tiny_model.prompt(4 * CHUNK + 100, seed=22, spec=tiny_model.SMALL)
    whole = (4 * CHUNK + 100) // BLOCK  # 35 whole blocks: 4 chunks of 8 and a tail of 3

    with vllm_server.serve(
        model, dtype=DTYPE, connector=settings, log_dir=tmp_path, args=args
    ) as server:
        sub = Subscriber(f"tcp://127.0.0.1:{port}", "kv")
        try:
            # Short new prompts until the subscription is through (PUB drops what comes before).
            seeds = iter(range(1000, 2000))

            def warm() -> bool:
                _complete(server.url, tiny_model.prompt(2 * BLOCK, next(seeds), tiny_model.SMALL))
                return bool(sub.snapshot())

            wait_until(warm, "the subscriber receives vLLM's events", timeout_s=120)
            _complete(server.url, first)
            gpu_hashes: list[Any] = []
            parents: dict[Any, Any] = {}

            def vllm_blocks_of_first() -> bool:
                by_tokens: dict[tuple[int, ...], tuple[Any, Any]] = {}
                for e in _kvtier_events(sub.snapshot(), BlockStored, "GPU"):
                    for i, h in enumerate(e.block_hashes):
                        parent = e.parent_block_hash if i == 0 else e.block_hashes[i - 1]
                        by_tokens[tuple(e.token_ids[i * BLOCK : (i + 1) * BLOCK])] = (h, parent)
                gpu_hashes.clear()
                for j in range(whole):
                    found = by_tokens.get(tuple(first[j * BLOCK : (j + 1) * BLOCK]))
                    if found is None:
                        return False
                    gpu_hashes.append(found[0])
                    parents[found[0]] = found[1]
                return True

            wait_until(vllm_blocks_of_first, "vLLM announces the first prompt's blocks")

            def announced(medium: str) -> list[Any]:
                return [
                    e
                    for e in _kvtier_events(sub.snapshot(), BlockStored, medium)
                    if set(e.block_hashes) <= set(gpu_hashes)
                ]

            def poked(condition: Any) -> Any:
                # Events leave the workers with vLLM's steps: an idle server publishes what its
                # tiers did meanwhile with its next step. A prompt shorter than a block makes one
                # and stores nothing.
                def check() -> bool:
                    _complete(
                        server.url, tiny_model.prompt(BLOCK // 2, next(seeds), tiny_model.SMALL)
                    )
                    return bool(condition())

                return check

            wait_until(
                poked(lambda: len(announced("CPU")) == 5), "kvtier announces 5 chunks in CPU"
            )
            cpu = sorted(announced("CPU"), key=lambda e: gpu_hashes.index(e.block_hashes[0]))
            assert [h for e in cpu for h in e.block_hashes] == gpu_hashes[:whole]
            for c, e in enumerate(cpu):
                assert e.parent_block_hash == parents[e.block_hashes[0]]
                assert e.token_ids == first[c * CHUNK : c * CHUNK + len(e.block_hashes) * BLOCK]
                assert e.block_size == BLOCK
            wait_until(poked(lambda: len(announced("STORAGE")) == 5), "and 5 on disk")

            _complete(server.url, second)

            def removed_from_cpu() -> list[Any]:
                return [
                    e
                    for e in _kvtier_events(sub.snapshot(), BlockRemoved, "CPU")
                    if set(e.block_hashes) <= set(gpu_hashes)
                ]

            wait_until(poked(lambda: len(removed_from_cpu()) >= 4), "the first prompt's evictions")
            for e in removed_from_cpu():
                assert any(e.block_hashes == s.block_hashes for s in cpu)
            assert not _kvtier_events(sub.snapshot(), BlockRemoved, "STORAGE"), "disk holds all"
            assert server.alive()
        finally:
            sub.close()
