"""The HTTP side's handle on the engine: commands with answers, token streams, and the engine's latest report.

Everything here runs on the event loop, which never waits on MLX: a command returns a future the engine's reply
resolves, a generation is a queue its events are put on. When the engine process exits unexpectedly, every
command and generation in flight fails with a retryable error and a new engine is started; models load again on
their next request. A command issued while the engine is being replaced waits for the new one (at most
`ENGINE_WAIT` seconds, then a 503); a message that could not be delivered is never dropped silently: the engine is
taken for gone at once, and what was sent to it fails or waits for its successor.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from mlx_router.config.settings import Settings
from mlx_router.engine.commands import Call, CancelGeneration, EngineReport, Post, StartGeneration
from mlx_router.engine.params import GenerationRequest, TokenEvent
from mlx_router.engine.transport import Transport, make_transport
from mlx_router.engine.wire import Message, event_from_tuple
from mlx_router.errors import ModelUnloadedError, RouterError, ServiceUnavailableError

logger = logging.getLogger(__name__)

RESTART_DELAY = 1.0  # seconds before a crashed engine is started again
MAX_RESTART_DELAY = 30.0  # the longest wait between attempts when new engines keep failing to start
ENGINE_WAIT = 60.0  # the longest a command waits for a restarting engine before it is refused with 503
SEND_ATTEMPTS = 3  # engines a command is offered to before it is refused (each new one died before taking it)

EngineState = Literal["running", "restarting", "failed", "stopped"]


def empty_report(device_memory: int | None = None) -> EngineReport:
    """What is known before the engine's first report, and after it exits: no models, no MLX memory."""
    return EngineReport(models={}, device_memory=device_memory)


def _error_event(error: BaseException) -> TokenEvent:
    return TokenEvent([], finish_reason="error", error=error)


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
        self._closed: RouterError | None = None  # set by `abort`: everything from now on fails with it
        self._failed_starts = 0  # new engines in a row that exited before their first report
        self.report: EngineReport = empty_report()
        self.restarts = 0
        self.waiting = 0  # commands waiting for a restarting engine
        self._ready: asyncio.Future[None] = loop.create_future()  # the current engine's first report
        self._transport = self._new_transport()
        self._lost: Transport | None = None  # the current transport, once its engine is known to be gone
        self._lost_at = 0.0  # time.monotonic() when the last engine was found gone
        # A distributed group (core/lockstep.py) is never restarted from here: its other ranks cannot rejoin.
        # When it breaks up, everything fails with 503 and `on_group_lost` (the app's) ends the server.
        self.group_lost: str | None = None
        self.on_group_lost: Callable[[str], None] | None = None

    def _new_transport(self) -> Transport:
        transport: Transport | None = None

        def deliver(msg: Message) -> None:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._dispatch, transport, msg)

        def on_exit(code: int | None) -> None:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._engine_exited, transport, code)

        transport = self._factory(self._settings, deliver, on_exit)
        return transport

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
        return self._lost is None and self._transport.alive

    @property
    def pid(self) -> int | None:
        """The process MLX runs in."""
        return self._transport.pid

    @property
    def state(self) -> EngineState:
        """`running`; `restarting` after a crash, until the new engine reports; `failed` while a new engine that
        did not start waits for its next attempt; `stopped` once the server shuts down."""
        if self._stopping or self._closed is not None:
            return "stopped"
        if not self._ready.done():
            return "restarting"
        return "failed" if self._ready.exception() is not None else "running"

    # -- commands ------------------------------------------------------------------------------------------
    async def call(self, command: Call) -> Any:
        """Run a command on the engine and wait for its answer (its exception is raised here).

        Waits for a restarting engine; a command the engine never received (it had just died) goes to the next.
        """
        for _ in range(SEND_ATTEMPTS):
            transport = await self._running_engine()
            call_id = next(self._ids)
            fut: asyncio.Future[Any] = self._loop.create_future()
            self._calls[call_id] = fut
            try:
                if transport.send(("call", call_id, command)):
                    return await fut
            finally:
                self._calls.pop(call_id, None)
            self._engine_gone(transport, None)
        raise ServiceUnavailableError("the engine keeps stopping; try again shortly", retry_after=5)

    def post(self, command: Post) -> None:
        """A command without an answer; dropped when there is no engine (nothing of it is left to act on)."""
        if self.state != "running":
            return
        transport = self._transport
        if not transport.send(("post", command)):
            self._engine_gone(transport, None)

    async def _running_engine(self) -> Transport:
        """The engine's transport once it runs; raises 503 when it cannot come back within ENGINE_WAIT."""
        if self._closed is not None:
            raise self._closed
        if not self._ready.done():
            self.waiting += 1
            try:
                async with asyncio.timeout(ENGINE_WAIT):
                    await asyncio.shield(self._ready)
            except TimeoutError:
                raise ServiceUnavailableError(
                    f"the engine is restarting and did not come back within {ENGINE_WAIT:g}s", retry_after=10
                ) from None
            except RouterError:
                raise
            except Exception:  # it exited while starting: refused now rather than waited on
                raise ServiceUnavailableError("the engine could not be restarted", retry_after=10) from None
            finally:
                self.waiting -= 1
        elif self._ready.exception() is not None:
            raise ServiceUnavailableError("the engine could not be restarted; trying again", retry_after=10)
        if self._closed is not None:
            raise self._closed
        return self._transport

    # -- generations ---------------------------------------------------------------------------------------
    def open(self, model_id: str, req: GenerationRequest) -> asyncio.Queue[TokenEvent]:
        """Start `req` on the engine; its events arrive on the queue returned. `close` when done with it.

        Without an engine the queue holds a retryable error at once: the model the request was admitted for
        went with the engine that had it.
        """
        queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        if self._closed is not None:
            queue.put_nowait(_error_event(self._closed))
            return queue
        if self.state != "running":
            queue.put_nowait(_error_event(ModelUnloadedError("the engine restarted; try again", retry_after=2)))
            return queue
        self._streams[req.request_id] = queue
        transport = self._transport
        if not transport.send(("post", StartGeneration(model_id, req))):
            self._engine_gone(transport, None)  # fails this stream with the others
        return queue

    def close(self, model_id: str, request_id: str, cancel: bool) -> None:
        """Stop listening to a generation; with `cancel`, the engine drops it (its slot frees at the next step)."""
        self._streams.pop(request_id, None)
        if cancel:
            self.post(CancelGeneration(model_id, request_id))

    def abort(self, error: RouterError) -> None:
        """Fail every command and generation in flight with `error`, and every later one (the server is
        shutting down: its running requests end with this error rather than with a cut connection)."""
        self._closed = error
        self._fail_in_flight(error)
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # retrieved: nobody may be waiting on it

    # -- from the engine (event loop) ----------------------------------------------------------------------
    def _dispatch(self, transport: Transport | None, msg: Message) -> None:
        if transport is not self._transport or self._lost is transport:
            return  # from an engine already taken for gone: its successor owns the state now
        kind = msg[0]
        if kind == "events":
            for request_id, event in msg[1]:
                queue = self._streams.get(request_id)
                if queue is not None:
                    queue.put_nowait(event_from_tuple(event))
        elif kind == "report":
            self.report = msg[1]
            if not self._ready.done():
                self._failed_starts = 0
                self._ready.set_result(None)
                if self.restarts:
                    took = time.monotonic() - self._lost_at
                    logger.info(
                        "engine restarted (restart %d): ready %.1fs after the last one stopped", self.restarts, took
                    )
        elif kind == "fatal":
            self._lose_group(msg[1])
        elif kind == "reply":
            _, call_id, ok, value = msg
            fut = self._calls.get(call_id)
            if fut is not None and not fut.done():
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def _engine_exited(self, transport: Transport | None, code: int | None) -> None:
        if transport is self._transport:
            self._engine_gone(transport, code)

    def _engine_gone(self, transport: Transport, code: int | None) -> None:
        """The engine behind `transport` is gone (it exited, or a message to it could not be delivered)."""
        if self._stopping or transport is not self._transport or self._lost is transport:
            return
        self._lost, self._lost_at = transport, time.monotonic()
        how = f"exit code {code}" if code is not None else "its pipe is closed"
        if self.report.ranks is not None or self.group_lost is not None:
            self._lose_group(f"rank 0's engine stopped ({how})")
            return
        if not self._ready.done() and self.restarts == 0:  # the first engine never started: nothing to go back to
            self._ready.set_exception(RuntimeError(f"the engine process exited while starting ({how})"))
            return
        if not self._ready.done():  # a new engine died before its first report: its waiters are refused
            self._failed_starts += 1
            self._ready.set_exception(RuntimeError(f"the new engine exited while starting ({how})"))
            self._ready.exception()
            delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2**self._failed_starts)
            logger.error("the new engine exited while starting (%s); trying again in %.0fs", how, delay)
        else:
            delay = RESTART_DELAY
            logger.error("the engine exited unexpectedly (%s); starting a new one", how)
            self._fail_in_flight(ModelUnloadedError("the engine stopped unexpectedly; try again", retry_after=2))
            self.report = empty_report(self.report.device_memory)
            self.restarts += 1
            self._ready = self._loop.create_future()  # commands from now on wait for the next engine
        self._loop.call_later(delay, self._restart)

    def _lose_group(self, reason: str) -> None:
        if self.group_lost is not None:
            return
        self.group_lost = reason
        logger.error("the distributed group is lost: %s; the server stops", reason)
        self.abort(
            ServiceUnavailableError(
                f"the distributed group serving the models is lost ({reason}); the server is restarting",
                retry_after=10,
                code="distributed_group_lost",
            )
        )
        if self.on_group_lost is not None:
            self.on_group_lost(reason)

    def _fail_in_flight(self, error: RouterError) -> None:
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(error)
        for queue in self._streams.values():
            queue.put_nowait(_error_event(error))
        self._streams.clear()

    def _restart(self) -> None:
        if self._stopping or self._closed is not None:
            return
        if self._ready.done():  # the last attempt failed: its successor gets a fresh future to be waited on
            self._ready = self._loop.create_future()
        self._transport = self._new_transport()
        self._lost = None
        self._transport.start()
