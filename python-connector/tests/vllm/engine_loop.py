"""vLLM's engine step around its real ``Scheduler``, with kvtier's connector on both sides.

:class:`Loop` builds vLLM 0.32's ``Scheduler`` (or ``AsyncScheduler``) over a KV cache of a few
blocks; the scheduler creates kvtier's scheduler-side connector itself, from the
``kv_transfer_config``. The worker-side connector runs in the same process over CPU tensors in the
CPU backend's layout, so the scheduler side's lookups are in-process calls into its engine, as in
vLLM's single-process executor. Each step does what ``EngineCore.step`` and the model runner do
around a connector: ``schedule()``, ``handle_preemptions``, ``bind_connector_metadata``, a forward,
``wait_for_save``, ``get_transfer_results``, ``get_block_ids_with_load_errors``,
``build_connector_worker_meta``, then
``update_from_output`` with a ``ModelRunnerOutput`` carrying the ``KVConnectorOutput``.

The forward writes each scheduled token's K and V as a function of (layer, position, token id) and
first checks that every token the request counts as computed holds exactly that, so a load into
the wrong blocks, a save of reused blocks or tokens vLLM counts as loaded but nobody wrote show up
as a :class:`WrongKv` (unless the worker reported load errors for that request in that step, in
which case vLLM discards the step's output for it, as it does).
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from vllm import SamplingParams
from vllm.config import (
    CacheConfig,
    DeviceConfig,
    KVTransferConfig,
    ModelConfig,
    SchedulerConfig,
    VllmConfig,
)
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import (
    FullAttentionSpec,
    KVCacheConfig,
    KVCacheGroupSpec,
    SlidingWindowSpec,
)
from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput
from vllm.v1.request import Request, RequestStatus
from vllm.v1.structured_output import StructuredOutputManager

from kvtier.vllm.connector import KVTierConnector

BLOCK = 16
"""vLLM's block size in these tests, in tokens."""
CHUNK = 32
"""kvtier's chunk size in these tests, in tokens (two blocks)."""
LAYERS, HEADS, HEAD = 2, 2, 32
EOS = 2
SAMPLED = 7
"""The token every simulated decode step samples."""


class WrongKv(AssertionError):
    """A request's computed tokens do not hold the KV the forward wrote for them."""


def model_dir(root: Path) -> str:
    """A Llama config with this geometry (no weights or tokenizer: the forward is simulated)."""
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HEADS * HEAD,
        "intermediate_size": 128,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "vocab_size": 1000,
        "max_position_embeddings": 4096,
        "eos_token_id": EOS,
        "torch_dtype": "float32",
    }
    (root / "config.json").write_text(json.dumps(config))
    return str(root)


def prompt(n: int, seed: int) -> list[int]:
    """``n`` token ids that differ between seeds from the first token on (never EOS)."""
    return [10 + (seed * 7919 + i * 104729) % 900 for i in range(n)]


@dataclass
class Reports:
    """What the worker side reported over a run, and what vLLM saw of it."""

    sending: list[str] = field(default_factory=list)
    recving: list[str] = field(default_factory=list)
    load_errors: set[int] = field(default_factory=set)
    failed_recving: set[str] = field(default_factory=set)
    outputs: dict[str, list[int]] = field(default_factory=dict)
    """Tokens each request produced, by request id."""


class PinLedger:
    """Pins taken by the engine's lookups and not released yet, by pin id (wraps the engine)."""

    def __init__(self, engine: Any) -> None:
        self.held: set[int] = set()
        lookup, unpin = engine.lookup_and_pin_tiers, engine.unpin

        def pinned(pin: int, tokens: Any, extras: Any = None) -> tuple[int, int, bool, bool]:
            hit = lookup(pin, tokens, extras)
            if hit[0] > 0:
                self.held.add(pin)
            return hit

        def unpinned(pin: int) -> None:
            unpin(pin)
            self.held.discard(pin)

        engine.lookup_and_pin_tiers = pinned
        engine.unpin = unpinned


class Loop:
    """One engine: a real vLLM scheduler and kvtier's two connector sides, stepped by hand."""

    def __init__(
        self,
        tmp_path: Path,
        num_blocks: int,
        *,
        max_batched_tokens: int = 256,
        async_scheduling: bool = False,
        settings: dict[str, Any] | None = None,
        model: Path | None = None,
        window: int | None = None,
    ) -> None:
        """``model``: where the model's config goes (default: under ``tmp_path``); engines given
        the same one share a key namespace, as two servers of one model do. ``window``: layer 0
        attends to a sliding window of that many tokens and layer 1 to everything, as vLLM's
        hybrid KV cache manager serves such a model: two KV cache groups, each with its own block
        table, whose layers view the same memory."""
        model = ModelConfig(
            model=model_dir(model or tmp_path / "model"),
            skip_tokenizer_init=True,
            dtype="float32",
            max_model_len=1024,
            seed=0,
        )
        self.config = VllmConfig(
            model_config=model,
            scheduler_config=SchedulerConfig(
                max_num_seqs=8,
                max_num_batched_tokens=max_batched_tokens,
                max_model_len=1024,
                enable_chunked_prefill=True,
                is_encoder_decoder=False,
                async_scheduling=async_scheduling,
            ),
            cache_config=CacheConfig(block_size=BLOCK, enable_prefix_caching=False),
            kv_transfer_config=KVTransferConfig(
                kv_connector="KVTierConnector",
                kv_connector_module_path="kvtier.vllm.connector",
                kv_role="kv_both",
                kv_connector_extra_config={"chunk_size": CHUNK, **(settings or {})},
            ),
            device_config=DeviceConfig("cpu"),
        )
        names = [f"model.layers.{i}.self_attn.attn" for i in range(LAYERS)]
        attention = {"block_size": BLOCK, "num_kv_heads": HEADS, "head_size": HEAD}
        full = FullAttentionSpec(**attention, dtype=torch.float32)
        self.window = window
        if window is None:
            groups = [KVCacheGroupSpec(names, full)]
            self.layer_groups = [0] * LAYERS
        else:
            sliding = SlidingWindowSpec(**attention, dtype=torch.float32, sliding_window=window)
            groups = [KVCacheGroupSpec(names[:1], sliding), KVCacheGroupSpec(names[1:2], full)]
            self.layer_groups = [0, 1]
        kv_cache_config = KVCacheConfig(
            num_blocks=num_blocks, kv_cache_tensors=[], kv_cache_groups=groups
        )
        self.config.cache_config.num_gpu_blocks = num_blocks
        self.num_blocks = num_blocks
        memory = torch.zeros(num_blocks, HEADS, BLOCK, 2 * HEAD, dtype=torch.float32)
        self.caches = {
            name: memory
            if window is not None
            else torch.zeros(num_blocks, HEADS, BLOCK, 2 * HEAD, dtype=torch.float32)
            for name in names
        }
        self.worker = KVTierConnector(self.config, KVConnectorRole.WORKER, kv_cache_config)
        self.worker.register_kv_caches(self.caches)
        self.worker_side = self.worker._worker
        assert self.worker_side is not None
        self.pins = PinLedger(self.worker_side._engine)
        scheduler_cls = AsyncScheduler if async_scheduling else Scheduler
        self.scheduler = scheduler_cls(
            vllm_config=self.config,
            kv_cache_config=kv_cache_config,
            log_stats=True,
            structured_output_manager=StructuredOutputManager(self.config),
            block_size=BLOCK,
        )
        self.connector = self.scheduler.connector
        assert isinstance(self.connector, KVTierConnector)
        self.side = self.connector._scheduler
        assert self.side is not None
        self.reports = Reports()
        self.prompts: dict[str, list[int]] = {}
        self.tables: dict[str, list[list[int]]] = {}
        """Each request's block table per KV cache group as the model runner keeps it, from the
        outputs."""
        self.in_flight: deque[SchedulerOutput] = deque()
        self.async_scheduling = async_scheduling
        self.steps = 0

    def close(self) -> None:
        self.worker.shutdown()

    # ---- driving --------------------------------------------------------------------------------

    def add(self, req_id: str, tokens: list[int], max_tokens: int = 2) -> Request:
        params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
        params.update_from_generation_config({}, EOS)
        request = Request(req_id, list(tokens), params, None)
        self.prompts[req_id] = list(tokens)
        self.reports.outputs[req_id] = []
        self.scheduler.add_request(request)
        return request

    def abort(self, *req_ids: str) -> None:
        self.scheduler.finish_requests(list(req_ids), RequestStatus.FINISHED_ABORTED)

    def schedule(self) -> SchedulerOutput:
        """``schedule()``; with async scheduling the output waits for :meth:`execute`."""
        out = self.scheduler.schedule()
        self.steps += 1
        self.in_flight.append(out)
        return out

    def execute(self) -> SchedulerOutput:
        """Runs the oldest scheduled step on the worker side and gives vLLM its output."""
        out = self.in_flight.popleft()
        engine_outputs = self.scheduler.update_from_output(out, self._run(out))
        for outputs in engine_outputs.values():
            for o in outputs.outputs:
                self.reports.outputs.setdefault(o.request_id, []).extend(o.new_token_ids)
        return out

    def step(self) -> SchedulerOutput:
        """One engine step (with async scheduling: schedule this step, execute the previous)."""
        out = self.schedule()
        if not self.async_scheduling or len(self.in_flight) > 1:
            self.execute()
        return out

    def run(
        self,
        until: Callable[[], bool] | None = None,
        timeout_s: float = 120.0,
        pause_s: float = 0.002,
    ) -> None:
        """Steps until ``until()`` (default: vLLM holds no request), pausing a little between
        steps so background transfers progress. Fails only when ``timeout_s`` (far above what the
        tests need, even on a loaded machine) runs out, whatever the number of steps."""
        done = until or (lambda: not self.scheduler.has_requests())
        deadline = time.monotonic() + timeout_s
        steps = 0
        while not done():
            if time.monotonic() > deadline:
                while self.in_flight:
                    self.execute()
                if done():
                    return
                raise AssertionError(
                    f"not done after {timeout_s:.0f} s, {steps} steps: {self.describe()}"
                )
            self.step()
            steps += 1
            if pause_s:
                time.sleep(pause_s)

    def status(self, req_id: str) -> RequestStatus | None:
        request = self.scheduler.requests.get(req_id)
        return request.status if request is not None else None

    def describe(self) -> str:
        return ", ".join(
            f"{r.request_id}: {r.status.name} computed={r.num_computed_tokens} "
            f"kvtier={self.side.state_of(r.request_id)}"
            for r in self.scheduler.requests.values()
        )

    def force_background(self, on: bool = True) -> None:
        """Makes the scheduler side see every hit as outside CPU memory, so it loads in the
        background (the worker still reads it from the CPU tier)."""
        real = self.worker_side.lookup
        if on:
            self.side._lookup = lambda pin, tokens, extras: (lambda h: (h[0], 0, h[2], h[3], h[4]))(
                real(pin, tokens, extras)
            )
        else:
            self.side._lookup = real

    # ---- checks ---------------------------------------------------------------------------------

    def assert_idle(self) -> None:
        """vLLM holds no request and every block is free; kvtier holds no pin and no request."""
        while self.in_flight:
            self.execute()
        assert not self.scheduler.requests, self.describe()
        assert not self.scheduler.finished_recving_kv_req_ids
        pool = self.scheduler.kv_cache_manager.block_pool
        assert pool.get_num_free_blocks() == self.num_blocks - 1
        # Pins released by a request's last metadata reach the worker with the next step.
        self.step()
        while self.in_flight:
            self.execute()
        assert not self.pins.held, f"pins still held: {self.pins.held}"
        assert not self.side._live and not self.side._finishing
        assert not self.worker_side._requests, list(self.worker_side._requests)
        assert self.side.dropped_reports == 0

    def assert_outputs(self, *req_ids: str, tokens: int = 2) -> None:
        for req_id in req_ids:
            assert self.reports.outputs[req_id] == [SAMPLED] * tokens, req_id

    # ---- the simulated model runner -------------------------------------------------------------

    def _run(self, out: SchedulerOutput) -> ModelRunnerOutput:
        w = self.worker
        meta = out.kv_connector_metadata
        w.handle_preemptions(meta)
        for req_id in out.preempted_req_ids or ():
            self.tables.pop(req_id, None)
        for req_id in out.finished_req_ids:
            self.tables.pop(req_id, None)
        w.bind_connector_metadata(meta)
        w.start_load_kv(None)
        layerwise = self.worker_side._layerwise and out.total_num_scheduled_tokens > 0
        if layerwise:  # attention asks for each layer's KV before reading it
            for name in self.caches:
                w.wait_for_layer_load(name)
        wrong = self._forward(out)
        if layerwise:  # and hands each layer's new KV over once written
            for name in self.caches:
                w.save_kv_layer(name, self.caches[name], None)
        w.wait_for_save()
        results = w.get_transfer_results(out.finished_req_ids)
        errors = w.get_block_ids_with_load_errors()
        worker_meta = w.build_connector_worker_meta()
        w.clear_connector_metadata()
        for req_id, problem in wrong.items():
            table = [b for group in self.tables.get(req_id, []) for b in group]
            if not errors.intersection(table):
                raise WrongKv(f"{req_id}: {problem}")
        self.reports.sending += sorted(results.finished_sending)
        self.reports.recving += sorted(results.finished_recving)
        self.reports.load_errors |= errors
        self.reports.failed_recving |= results.failed_recving
        req_ids = list(out.num_scheduled_tokens)
        sampled = []
        for req_id in req_ids:
            request = self.scheduler.requests.get(req_id)
            done = request is not None and request.num_computed_tokens >= request.num_tokens
            sampled.append([SAMPLED] if done else [])
        connector_output = KVConnectorOutput(
            finished_sending=set(results.finished_sending) or None,
            finished_recving=set(results.finished_recving) or None,
            invalid_block_ids=errors,
            failed_recving=set(results.failed_recving),
            kv_connector_worker_meta=worker_meta,
        )
        return ModelRunnerOutput(
            req_ids=req_ids,
            req_id_to_index={r: i for i, r in enumerate(req_ids)},
            sampled_token_ids=sampled,
            logprobs=None,
            prompt_logprobs_dict={},
            pooler_output=None,
            kv_connector_output=connector_output,
        )

    def _forward(self, out: SchedulerOutput) -> dict[str, str]:
        """Checks each scheduled request's computed tokens, then writes its scheduled ones."""
        wrong: dict[str, str] = {}
        groups = len(set(self.layer_groups))
        for new in out.scheduled_new_reqs:
            self.tables[new.req_id] = [list(g) for g in new.block_ids]
            wrong.update(self._compute(new.req_id, new.num_computed_tokens, out))
        cached = out.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            new_ids = cached.new_block_ids[i] or [[] for _ in range(groups)]
            if req_id in cached.resumed_req_ids:
                self.tables[req_id] = [list(g) for g in new_ids]
            else:
                table = self.tables.setdefault(req_id, [[] for _ in range(groups)])
                for g, ids in enumerate(new_ids):
                    table[g].extend(ids)
            wrong.update(self._compute(req_id, cached.num_computed_tokens[i], out))
        return wrong

    def _compute(self, req_id: str, computed: int, out: SchedulerOutput) -> dict[str, str]:
        n = out.num_scheduled_tokens[req_id]
        table = self.tables[req_id]
        problem = self._check(req_id, table, computed)
        self._write(req_id, table, computed, computed + n)
        return {req_id: problem} if problem else {}

    def _token(self, req_id: str, position: int) -> int:
        p = self.prompts[req_id]
        return p[position] if position < len(p) else SAMPLED

    def _expected(self, req_id: str, lo: int, hi: int, layer: int) -> torch.Tensor:
        return torch.tensor(
            [self._token(req_id, p) * 1024 + p + layer / 4 for p in range(lo, hi)],
            dtype=torch.float32,
        )

    def _slots(self, table: list[int], lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(lo, hi)
        blocks = torch.tensor(table, dtype=torch.long)[positions // BLOCK]
        return blocks, positions % BLOCK

    def _write(self, req_id: str, tables: list[list[int]], lo: int, hi: int) -> None:
        if hi <= lo:
            return
        for layer, cache in enumerate(self.caches.values()):
            blocks, slots = self._slots(tables[self.layer_groups[layer]], lo, hi)
            view = cache.view(self.num_blocks, HEADS, 2 * BLOCK, HEAD)
            k = self._expected(req_id, lo, hi, layer)[:, None, None].expand(-1, HEADS, HEAD)
            view[blocks, :, slots, :] = k
            view[blocks, :, slots + BLOCK, :] = -k

    def _check(self, req_id: str, tables: list[list[int]], computed: int) -> str | None:
        """Whether every position attention reads holds its KV: all computed ones, or for the
        sliding layer those of the window of the next token."""
        if computed <= 0:
            return None
        for layer, cache in enumerate(self.caches.values()):
            lo = 0
            if self.window is not None and self.layer_groups[layer] == 0:
                lo = max(0, computed - self.window + 1)
            blocks, slots = self._slots(tables[self.layer_groups[layer]], lo, computed)
            view = cache.view(self.num_blocks, HEADS, 2 * BLOCK, HEAD)
            k = self._expected(req_id, lo, computed, layer)[:, None, None].expand(-1, HEADS, HEAD)
            got_k, got_v = view[blocks, :, slots, :], view[blocks, :, slots + BLOCK, :]
            bad = ((got_k != k) | (got_v != -k)).flatten(1).any(1).nonzero().flatten()
            if len(bad):
                return (
                    f"layer {layer}: positions {(bad[:8] + lo).tolist()} of {computed} computed "
                    "do not hold their KV"
                )
        return None


class HeldCompletions:
    """Hides the worker's finished background transfers from it until :meth:`release`, as if
    they were slow (the Java transfers themselves run and end as usual)."""

    def __init__(self, loop: Loop) -> None:
        self.held = True
        java = loop.worker_side._worker
        real = java.drainCompleted
        java.drainCompleted = lambda: () if self.held else real()

    def release(self) -> None:
        self.held = False


class AwaitedTickets:
    """Records the tickets the worker waits for before vLLM reuses preempted requests' blocks."""

    def __init__(self, loop: Loop) -> None:
        self.tickets: list[int] = []
        java = loop.worker_side._worker
        real = java.awaitTickets

        def recorded(tickets: Any, timeout_millis: int) -> bool:
            self.tickets += [int(t) for t in tickets]
            return real(tickets, timeout_millis)

        java.awaitTickets = recorded


def finished(loop: Loop, req_ids: Iterable[str]) -> Callable[[], bool]:
    """Until-condition: vLLM holds none of ``req_ids`` any more."""
    ids = list(req_ids)
    return lambda: all(r not in loop.scheduler.requests for r in ids)


def store(loop: Loop, req_id: str, tokens: list[int]) -> None:
    """Runs a request to its end, so its prompt's whole chunks are stored."""
    loop.add(req_id, tokens)
    loop.run(finished(loop, [req_id]))
    assert loop.reports.outputs[req_id] == [SAMPLED, SAMPLED]


def busy(loop: Loop, requests: int, seed: int) -> None:
    """Requests sharing a few prefixes arrive faster than a small cache holds them, some are
    aborted at random points; then every request that was not aborted must have generated with
    the right KV (the forward checks it), something loaded, and everything be released."""
    rng = random.Random(seed)
    prefixes = [prompt(n * CHUNK, seed=40 + n) for n in (2, 3, 4)]
    aborted: set[str] = set()
    live: list[str] = []
    for i in range(requests):
        req_id = f"r{i}"
        prefix = prefixes[rng.randrange(len(prefixes))]
        loop.add(req_id, [*prefix, *prompt(rng.randrange(1, 40), seed=100 + i)], max_tokens=3)
        live.append(req_id)
        for _ in range(rng.randrange(1, 4)):
            loop.step()
        if rng.random() < 0.2:
            victim = live.pop(rng.randrange(len(live)))
            if victim in loop.scheduler.requests:
                aborted.add(victim)
                loop.abort(victim)
    loop.run(pause_s=0.001)
    for req_id in live:
        if req_id not in aborted:
            assert loop.reports.outputs[req_id] == [SAMPLED] * 3, req_id
    assert loop.worker_side.stats()["loaded_tokens"] > 0
    loop.assert_idle()
