"""The engine's narrow async interface for serving code: `async with engine.generate(request) as generation`,
then `generation.events()`; `await engine.embed(inputs, ...)` (embedding vectors); and `health()`.

Entering `generate` admits the request (queue and memory limits: 429/503) and, for a model not loaded yet,
starts its load and waits until the engine has found its files sound and made room, so whatever refuses the
request is raised before a response starts. `events()` then waits for the weights, runs the request and yields
its TokenEvents; leaving the block cancels it in the engine unless it finished, and releases what it held.

Tokens travel from the engine's worker thread to the event loop in one message per worker iteration, however
many streams are running (`core/host.py`). The event loop never waits on MLX; it only awaits its own queues.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from mlx_router.engine.activity import Activity
from mlx_router.engine.client import EngineClient
from mlx_router.engine.commands import CancelGeneration, EmbedInputs
from mlx_router.engine.manager import LoadJob, MLXModelManager, ModelSlot
from mlx_router.engine.params import GenerationRequest, TokenEvent


def _coalesce(event: TokenEvent, queue: asyncio.Queue[TokenEvent]) -> TokenEvent:
    """Merge the events already waiting behind `event` into it.

    When the event loop falls behind (many streams), one chunk then carries several tokens instead of each
    token paying for its own chunk; when it keeps up, every token still goes out on its own.
    """
    while event.finish_reason is None and not queue.empty():
        nxt = queue.get_nowait()
        event.tokens.extend(nxt.tokens)
        if nxt.logprobs:
            event.logprobs = (event.logprobs or []) + nxt.logprobs
        if nxt.prompt_tokens and not event.prompt_tokens:
            event.prompt_tokens, event.cached_tokens = nxt.prompt_tokens, nxt.cached_tokens
            event.queue_seconds = nxt.queue_seconds
        event.finish_reason, event.error = nxt.finish_reason, nxt.error
    return event


class Generation:
    """One admitted request: `events()` runs it (after its model's load) and yields its events; `close`
    cancels it in the engine unless it finished (a client gone, a timeout, a stop string; the batch slot frees
    at the next step)."""

    def __init__(self, engine: Engine, req: GenerationRequest, load: LoadJob | None) -> None:
        self._engine = engine
        self._req = req
        self._model_id = req.model_id
        self._load = load
        self._queue: asyncio.Queue[TokenEvent] | None = None
        self._finished = False
        self._closed = False
        self._activity = None if req.internal else engine.activity  # the warm-up is not the users' activity
        self.posted_at: float | None = None  # time.monotonic() when it went to the engine, its model loaded

    def start(self) -> None:
        """Queue the request on its loaded model now (`events` does it otherwise)."""
        if self._queue is not None or self._closed:
            return
        self.posted_at = time.monotonic()
        self._queue = self._engine.client.open(self._model_id, self._req)
        if self._activity is not None:
            self._activity.request_started(self._model_id)

    async def events(self) -> AsyncIterator[TokenEvent]:
        """The events up to and including the one with a finish_reason."""
        if self._queue is None:
            await self._engine.manager.ensure_loaded(self._model_id, self._load)
            self.start()
        queue = self._queue
        assert queue is not None
        while not self._finished and not self._closed:
            event = _coalesce(await queue.get(), queue)
            self._finished = event.finish_reason is not None
            if self._activity is not None:
                self._count(self._activity, event)
            yield event

    def _count(self, activity: Activity, event: TokenEvent) -> None:
        if event.prompt_tokens:
            activity.prompt_done(self._model_id, event.prompt_tokens, event.cached_tokens)
        activity.tokens(self._model_id, len(event.tokens))
        if event.finish_reason is not None:
            activity.request_ended(self._model_id, event.finish_reason)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._queue is None:
            return
        self._engine.client.close(self._model_id, self._req.request_id, cancel=not self._finished)
        if not self._finished and self._activity is not None:
            self._activity.request_ended(self._model_id, "cancelled")


class Admission:
    """`async with engine.generate(req) as generation`: admits on entry, releases on exit."""

    def __init__(self, engine: Engine, req: GenerationRequest) -> None:
        self._engine = engine
        self._req = req
        self._slot: ModelSlot | None = None
        self._reserved = 0
        self._generation: Generation | None = None

    async def __aenter__(self) -> Generation:
        manager = self._engine.manager
        self._slot = manager.acquire(self._req.model_id)
        load = None
        try:
            kv_tokens = len(self._req.prompt_tokens) + self._req.max_tokens
            self._reserved = manager.admit(self._slot, kv_tokens, self._req.encode_bytes)
            if self._slot.state != "ready":
                load = await manager.prepare_load(self._req.model_id)
        except BaseException:
            self._release()
            raise
        self._generation = Generation(self._engine, self._req, load)
        if self._slot.state == "ready":
            # Queued on the engine now, before the response starts: under a burst every hop through the event
            # loop waits behind the other requests' work, and a request that reaches the engine a step later
            # than its neighbours is prefilled in a group of its own.
            self._generation.start()
        return self._generation

    async def __aexit__(self, *exc: object) -> None:
        if self._generation is not None:
            self._generation.close()
        self._release()

    def _release(self) -> None:
        if self._slot is not None:
            self._engine.manager.release(self._slot, self._reserved)
            self._slot = None


class Engine:
    """Runs generations in the engine and streams their tokens back."""

    def __init__(self, manager: MLXModelManager, client: EngineClient, activity: Activity | None = None) -> None:
        self.manager = manager
        self.client = client
        self.activity = activity

    def generate(self, req: GenerationRequest) -> Admission:
        """`async with engine.generate(req) as generation`: see the module docstring."""
        return Admission(self, req)

    async def embed(self, inputs: EmbedInputs, activation_bytes_per_token: int = 0) -> list[bytes]:
        """The embedding vectors of `inputs.rows`, float32 little-endian bytes each, in order.

        Admitted as a generation is (429 when the model's queue is full, 503 naming the memory limit): the
        engine computes one batch of at most `prefill_batch_tokens` padded tokens (or one longer row alone) at a
        time per model, so the request reserves the KV cache and activations of its tokens up to one batch's.
        The model is loaded if it is not; the engine batches the rows with other requests'. Cancelled (the
        client gone, a timeout), the rows not yet computed are dropped in the engine."""
        manager = self.manager
        d = manager.settings.defaults
        tokens, batch = sum(len(r) for r in inputs.rows), max(d.prefill_batch_tokens, d.prefill_step_size)
        kv_tokens = min(tokens, max(batch, max(len(r) for r in inputs.rows)))  # a longer row runs alone, chunked
        slot = manager.acquire(inputs.model_id)
        reserved = 0
        try:
            reserved = manager.admit(slot, kv_tokens, min(tokens, batch) * activation_bytes_per_token)
            if slot.state != "ready":
                await manager.ensure_loaded(inputs.model_id, await manager.prepare_load(inputs.model_id))
            return await self._compute(inputs)
        finally:
            manager.release(slot, reserved)

    async def _compute(self, inputs: EmbedInputs) -> list[bytes]:
        model_id = inputs.model_id
        if self.activity is not None:
            self.activity.request_started(model_id)
        outcome = "cancelled"
        try:
            vectors: list[bytes] = await self.client.call(inputs)
            outcome = "stop"
            return vectors
        except asyncio.CancelledError:
            self.client.post(CancelGeneration(model_id, inputs.request_id))
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            if self.activity is not None:
                if outcome == "stop":
                    self.activity.prompt_done(model_id, sum(len(r) for r in inputs.rows), 0)
                self.activity.request_ended(model_id, outcome)

    def health(self) -> dict[str, Any]:
        """Loaded models with their running and queued counts; memory; requests in flight.

        Requests in flight are every admitted request not yet answered, wherever it waits: for its model's load,
        for a restarting engine, or in the engine's batch."""
        slots = self.manager.slots()
        models = [_slot_health(slot) for slot in slots]
        snap = self.manager.monitor.snapshot()
        health: dict[str, Any] = {
            "worker_alive": self.client.alive,
            "engine_state": self.client.state,
            "engine_pid": self.client.pid,
            "engine_restarts": self.client.restarts,
            "requests_in_flight": sum(slot.refs for slot in slots),
            "requests_waiting_for_engine": self.client.waiting,
            "models": models,
            "memory": {
                "total_gb": round(snap.total_gb, 2),
                "available_gb": round(snap.available_gb, 2),
                "used_percent": snap.used_percent,
                "swap_percent": snap.swap_percent,
                "mlx_active_gb": round(snap.mlx_active_gb, 3),
                "mlx_cache_gb": round(snap.mlx_cache_gb, 3),
                "mlx_peak_gb": round(snap.mlx_peak_gb, 3),
                "budget_gb": round(self.manager.monitor.budget_bytes() / 1024**3, 2),
                "pressure": snap.pressure,
            },
        }
        ranks = self.client.report.ranks
        if ranks is not None:  # a distributed group: every rank's memory and requests (core/lockstep.py)
            health["ranks"] = [_rank_health(rank, r) for rank, r in enumerate(ranks)]
        if self.client.group_lost is not None:
            health["group_lost"] = self.client.group_lost
        return health


def _rank_health(rank: int, r: dict[str, int]) -> dict[str, Any]:
    gb = 1024**3
    return {
        "rank": rank,
        "mlx_active_gb": round(r["active"] / gb, 3),
        "mlx_cache_gb": round(r["cache"] / gb, 3),
        "mlx_peak_gb": round(r["peak"] / gb, 3),
        "device_memory_gb": round(r["device_memory"] / gb, 2) if r["device_memory"] else None,
        "budget_gb": round(r["budget"] / gb, 2),
        "running": r["running"],
        "queued": r["queued"],
        "models_loaded": r["models"],
    }


def _slot_health(slot: ModelSlot) -> dict[str, Any]:
    return {
        "id": slot.model_id,
        "state": slot.state,
        "requests": slot.refs,
        "running": slot.running,
        "queued": slot.queued,
        "memory_gb": round(slot.cost_bytes / 1024**3, 3),
        "kv_reserved_gb": round(slot.reserved_kv / 1024**3, 3),
        "kv_cache_gb": round(slot.kv_bytes / 1024**3, 3),
        "error": slot.error,
        "loads": slot.loads,
    }
