"""The HTTP side's handle on the engine: commands with answers, token streams, and the engine's latest report.

Everything here runs on the event loop, which never waits on MLX: a command returns a future the engine's reply
resolves, a generation is a queue its events are put on. When the engine process exits unexpectedly, every
command and generation in flight fails with a retryable error and a new engine is started; models load again on
their next request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

from mlx_router.config.settings import Settings
from mlx_router.core.params import GenerationRequest, TokenEvent
from mlx_router.core.transport import Transport, make_transport
from mlx_router.core.wire import Message, event_from_tuple
from mlx_router.errors import ModelUnloadedError

logger = logging.getLogger(__name__)

RESTART_DELAY = 1.0  # seconds before a crashed engine is started again


def empty_report(device_memory: int | None = None) -> dict[str, Any]:
    """What is known before the engine's first report, and after it exits: no models, no MLX memory."""
    return {"models": {}, "mlx": (0, 0, 0), "device_memory": device_memory}


class EngineClient:
    """Speaks to the engine (in its own process or a thread) for the event loop."""

    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        transport_factory: Callable[..., Transport] = make_transport,
    ) -> None:
        self._settings = settings
        self._loop = loop
        self._factory = transport_factory
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[str, asyncio.Queue[TokenEvent]] = {}
        self._stopping = False
        self.report: dict[str, Any] = empty_report()
        self.restarts = 0
        self._ready: asyncio.Future[None] = loop.create_future()
        self._transport = self._new_transport()

    def _new_transport(self) -> Transport:
        def deliver(msg: Message) -> None:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._dispatch, msg)

        def on_exit(code: int | None) -> None:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._engine_exited, code)

        return self._factory(self._settings, deliver, on_exit)

    def start(self) -> None:
        self._transport.start()

    async def ready(self) -> None:
        """Wait for the engine's first report (a new process imports MLX first: a second or two)."""
        await asyncio.shield(self._ready)

    def stop(self) -> None:
        self._stopping = True
        self._transport.stop()

    @property
    def alive(self) -> bool:
        return self._transport.alive

    @property
    def pid(self) -> int | None:
        """The process MLX runs in."""
        return self._transport.pid

    # -- commands ------------------------------------------------------------------------------------------
    async def call(self, name: str, **kwargs: Any) -> Any:
        """Run a command on the engine and wait for its answer (its exception is raised here)."""
        call_id = next(self._ids)
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._calls[call_id] = fut
        self._transport.send(("call", call_id, name, kwargs))
        try:
            return await fut
        finally:
            self._calls.pop(call_id, None)

    def post(self, name: str, **kwargs: Any) -> None:
        """A command without an answer."""
        self._transport.send(("post", name, kwargs))

    # -- generations ---------------------------------------------------------------------------------------
    def open(self, model_id: str, req: GenerationRequest) -> asyncio.Queue[TokenEvent]:
        """Start `req` on the engine; its events arrive on the queue returned. `close` when done with it."""
        queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        self._streams[req.request_id] = queue
        self.post("add", model_id=model_id, request=req)
        return queue

    def close(self, model_id: str, request_id: str, cancel: bool) -> None:
        """Stop listening to a generation; with `cancel`, the engine drops it (its slot frees at the next step)."""
        self._streams.pop(request_id, None)
        if cancel:
            self.post("cancel", model_id=model_id, request_id=request_id)

    # -- from the engine (event loop) ----------------------------------------------------------------------
    def _dispatch(self, msg: Message) -> None:
        kind = msg[0]
        if kind == "events":
            for request_id, event in msg[1]:
                queue = self._streams.get(request_id)
                if queue is not None:
                    queue.put_nowait(event_from_tuple(event))
        elif kind == "report":
            self.report = msg[1]
            if not self._ready.done():
                self._ready.set_result(None)
        elif kind == "reply":
            _, call_id, ok, value = msg
            fut = self._calls.get(call_id)
            if fut is not None and not fut.done():
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def _engine_exited(self, code: int | None) -> None:
        if self._stopping:
            return
        if not self._ready.done():  # it never started: starting it again would fail the same way
            self._ready.set_exception(RuntimeError(f"the engine process exited while starting (exit code {code})"))
            return
        logger.error("the engine exited unexpectedly (exit code %s); starting a new one", code)
        error = ModelUnloadedError("the engine stopped unexpectedly; try again", retry_after=2)
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(error)
        for queue in self._streams.values():
            queue.put_nowait(TokenEvent([], finish_reason="error", error=error))
        self._streams.clear()
        self.report = empty_report(self.report.get("device_memory"))
        self.restarts += 1
        self._loop.call_later(RESTART_DELAY, self._restart)

    def _restart(self) -> None:
        if self._stopping:
            return
        self._transport = self._new_transport()
        self._transport.start()
