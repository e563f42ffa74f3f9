"""uvicorn's server, with a drain before it shuts down.

uvicorn answers SIGTERM by closing its listening socket at once (new clients are refused a connection) and, after
its graceful timeout, cutting the requests still running without a word. Here the first SIGTERM drains the app
(`api/drain.py`) for `server.drain_seconds` and only then lets uvicorn shut down; SIGINT (Ctrl-C) drains without
waiting (running requests end with their error at once). A second signal ends the wait; a third forces the exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

import uvicorn

logger = logging.getLogger(__name__)

Drain = Callable[[float, asyncio.Event], Coroutine[Any, Any, None]]


class DrainingServer(uvicorn.Server):
    """A uvicorn server that runs `drain(seconds, hurry)` on the first SIGTERM or SIGINT before shutting down."""

    def __init__(self, config: uvicorn.Config, drain: Drain, drain_seconds: float) -> None:
        super().__init__(config)
        self._drain = drain
        self._drain_seconds = drain_seconds
        self._drain_for: float | None = None  # set by the first signal
        self._hurry_asked = False  # set by the second
        self._hurry = asyncio.Event()
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: only flags here; `on_tick`, on the event loop, acts on them within 0.1 s.
        if self.should_exit or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
        elif self._drain_for is None:
            self._captured_signals.append(sig)  # re-raised by uvicorn once it has shut down, as it does itself
            self._drain_for = self._drain_seconds if sig == signal.SIGTERM else 0.0
        elif not self._hurry_asked:
            self._hurry_asked = True
        else:
            super().handle_exit(sig, frame)

    def exit_soon(self) -> None:
        """Shut down without waiting for running requests (they have already ended with their error), as on a
        first SIGINT: the app asks this when it cannot serve any more (a distributed group broke up)."""
        if self._drain_for is None:
            self._drain_for = 0.0

    async def on_tick(self, counter: int) -> bool:
        if self._drain_for is not None and self._draining is None:
            self._draining = asyncio.create_task(self._drain(self._drain_for, self._hurry))
        if self._hurry_asked:
            self._hurry.set()
        if self._draining is not None and self._draining.done():
            if not self._draining.cancelled() and self._draining.exception() is not None:
                logger.error("the drain failed", exc_info=self._draining.exception())
            self.should_exit = True
        return await super().on_tick(counter)
