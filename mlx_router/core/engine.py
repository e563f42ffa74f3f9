"""The engine's narrow async interface: `generate(request) -> stream of TokenEvent`, and `health()`.

Tokens travel from the MLX worker to the event loop in one hop per worker iteration: the worker appends events
to a relay and flushes it once per step with a single `call_soon_threadsafe`, however many streams are running.
The event loop never waits on MLX; it only awaits its own queues.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from mlx_router.core.manager import MLXModelManager, ModelSlot
from mlx_router.core.params import GenerationRequest, TokenEvent
from mlx_router.core.runner import ModelRunner
from mlx_router.core.worker import MLXWorker
from mlx_router.errors import InvalidRequestError


class EventRelay:
    """Carries TokenEvents from the worker thread to their asyncio queues in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[tuple[asyncio.Queue[TokenEvent], TokenEvent]] = []
        self._lock = threading.Lock()
        self._scheduled = False  # a delivery is queued on the loop and has not run yet

    def emitter(self, queue: asyncio.Queue[TokenEvent]) -> Any:
        def emit(event: TokenEvent) -> None:
            with self._lock:
                self._pending.append((queue, event))

        return emit

    def flush(self) -> None:
        """Worker thread: wake the event loop to take what was emitted, unless a wake-up is still pending
        (waking costs a syscall and a GIL hand-over: under load one wake-up carries several steps)."""
        with self._lock:
            if not self._pending or self._scheduled:
                return
            self._scheduled = True
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """Event loop: put every pending event on its request's queue."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._scheduled = False
        for queue, event in batch:
            queue.put_nowait(event)


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
        event.finish_reason, event.error = nxt.finish_reason, nxt.error
    return event


class Engine:
    """Runs generations on the MLX worker and streams their tokens back."""

    def __init__(self, manager: MLXModelManager, worker: MLXWorker, relay: EventRelay) -> None:
        self.manager = manager
        self.worker = worker
        self.relay = relay
        self.in_flight = 0

    async def generate(self, runner: ModelRunner, req: GenerationRequest) -> AsyncIterator[TokenEvent]:
        """Queue `req` on `runner`; yield its events until the one with a finish_reason.

        Leaving the loop early (client gone, timeout, stop string) cancels the request on the worker, which
        frees its batch slot at the next step.
        """
        queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        emit = self.relay.emitter(queue)

        def add() -> None:
            try:
                runner.add(req, emit)
            except ValueError as e:  # e.g. a grammar that does not compile: the client gets the reason
                emit(TokenEvent(tokens=[], finish_reason="error", error=InvalidRequestError(str(e))))
            except Exception as e:
                emit(TokenEvent(tokens=[], finish_reason="error", error=e))

        finished = False
        self.in_flight += 1
        self.worker.post(add)
        try:
            while True:
                event = _coalesce(await queue.get(), queue)
                finished = event.finish_reason is not None
                yield event
                if finished:
                    return
        finally:
            self.in_flight -= 1
            if not finished:
                self.worker.post(lambda: runner.cancel(req.request_id))

    def health(self) -> dict[str, Any]:
        """Loaded models with their running and queued counts; memory; requests in flight."""
        models = []
        for slot in self.manager.slots():
            models.append(_slot_health(slot))
        snap = self.manager.monitor.snapshot()
        return {
            "worker_alive": self.worker.alive,
            "requests_in_flight": self.in_flight,
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
    running, waiting = slot.runner.counts() if slot.runner is not None else (0, 0)
    return {
        "id": slot.model_id,
        "state": slot.state,
        "requests": slot.refs,
        "running": running,
        "queued": waiting,
        "memory_gb": round(slot.cost_bytes / 1024**3, 3),
        "kv_reserved_gb": round(slot.reserved_kv / 1024**3, 3),
        "kv_cache_gb": round(slot.runner.kv_bytes() / 1024**3, 3) if slot.runner is not None else 0.0,
        "error": slot.error,
        "loads": slot.loads,
    }
