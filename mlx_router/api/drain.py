"""Shutting down without losing a request in silence (SIGTERM: what launchd and systemd send on every restart).

The server stops admitting (503 with Retry-After, the connection closed), lets the requests it is serving finish
for up to `server.drain_seconds`, then ends the rest with an error: a stream gets an error event and its end
marker, any other request a JSON 503. Only then does uvicorn shut down and the engine stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from mlx_router.api.errors import error_body_for
from mlx_router.errors import RouterError, ServiceUnavailableError

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNGATED_PATHS = ("/health", "/v1/health")  # monitors see the drain in /v1/health's status
RETRY_AFTER_SECONDS = 5  # a service manager restarts the server within a few seconds
ABORT_GRACE_SECONDS = 3.0  # for the error events and 503s of the requests ended at the deadline to go out


def shutting_down_error() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "the server is shutting down; try again shortly", retry_after=RETRY_AFTER_SECONDS, code="server_shutting_down"
    )


class RequestGate:
    """Counts the requests being served; once closed, new ones are refused."""

    def __init__(self) -> None:
        self.closed = False
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float, hurry: asyncio.Event | None = None) -> bool:
        """Whether every request ended within `timeout` seconds (or before `hurry` was set)."""
        waits = [asyncio.ensure_future(self._idle.wait())]
        if hurry is not None:
            waits.append(asyncio.ensure_future(hurry.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self._idle.is_set()


class RequestGateMiddleware:
    """Counts every HTTP request but the health checks in the gate, and refuses them once it is closed."""

    def __init__(self, app: ASGIApp, gate: RequestGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNGATED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.gate.closed:
            await _refuse(scope, send, shutting_down_error())
            return
        self.gate.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.leave()


async def _refuse(scope: Scope, send: Send, error: RouterError) -> None:
    payload = json.dumps(error_body_for(scope.get("path", ""), error)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),  # the client's next try opens a connection to whatever serves next
        *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def drain(app: FastAPI, seconds: float, hurry: asyncio.Event | None = None) -> None:
    """Close `app`'s gate, wait up to `seconds` (or until `hurry`) for its requests, then end the rest."""
    gate: RequestGate = app.state.gate
    gate.closed = True
    logger.info("shutting down: %d request(s) running; waiting up to %gs for them", gate.active, seconds)
    if await gate.wait_idle(seconds, hurry):
        return
    logger.warning("shutting down: ending %d request(s) still running after %gs", gate.active, seconds)
    services = getattr(app.state, "services", None)
    if services is not None:
        services.client.abort(shutting_down_error())
    if not await gate.wait_idle(ABORT_GRACE_SECONDS):
        logger.warning("shutting down: %d response(s) not finished (their clients are not reading)", gate.active)
