"""The engine's narrow async interface: `start(model_id, request) -> Generation` (its TokenEvents, `close`),
and `health()`.

Tokens travel from the engine's worker thread to the event loop in one message per worker iteration, however
many streams are running (`core/host.py`). The event loop never waits on MLX; it only awaits its own queues.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from mlx_router.engine.activity import Activity
from mlx_router.engine.client import EngineClient
from mlx_router.engine.manager import MLXModelManager, ModelSlot
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
    """One request queued on the engine: its events as they come, and `close`, which cancels it in the engine
    unless it finished (a client gone, a timeout, a stop string; the batch slot frees at the next step)."""

    def __init__(self, engine: Engine, model_id: str, req: GenerationRequest) -> None:
        self._engine = engine
        self._model_id = model_id
        self._request_id = req.request_id
        self._queue = engine.client.open(model_id, req)
        self._finished = False
        self._closed = False
        self._activity = None if req.internal else engine.activity  # the warm-up is not the users' activity
        if self._activity is not None:
            self._activity.request_started(model_id)

    async def events(self) -> AsyncIterator[TokenEvent]:
        """The events up to and including the one with a finish_reason."""
        while not self._finished and not self._closed:
            event = _coalesce(await self._queue.get(), self._queue)
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
        self._engine.client.close(self._model_id, self._request_id, cancel=not self._finished)
        if not self._finished and self._activity is not None:
            self._activity.request_ended(self._model_id, "cancelled")


class Engine:
    """Runs generations in the engine and streams their tokens back."""

    def __init__(self, manager: MLXModelManager, client: EngineClient, activity: Activity | None = None) -> None:
        self.manager = manager
        self.client = client
        self.activity = activity

    def start(self, model_id: str, req: GenerationRequest) -> Generation:
        """Queue `req` on its (loaded) model now; read its events from the handle, and close it when done."""
        return Generation(self, model_id, req)

    def health(self) -> dict[str, Any]:
        """Loaded models with their running and queued counts; memory; requests in flight.

        Requests in flight are every admitted request not yet answered, wherever it waits: for its model's load,
        for a restarting engine, or in the engine's batch."""
        slots = self.manager.slots()
        models = [_slot_health(slot) for slot in slots]
        snap = self.manager.monitor.snapshot()
        return {
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
