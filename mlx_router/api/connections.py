"""Connection limits for uvicorn: at most `server.max_connections` open at once, and request heads on a clock.

uvicorn bounds neither: every accepted connection stays until its client closes it (idle ones included), so
enough idle connections use up the process's file descriptors and later clients are reset; and a client that
sends half a request head is waited for forever. Here, uvicorn's own HTTP protocol (httptools or h11, as it
picks) is extended:
- a connection opened while `max_connections` are open already has its request answered at once with a 503
  and `Retry-After` in OpenAI's error envelope, then closed (a reply, not a reset);
- a connection must send a whole request head within `request_head_timeout` seconds of opening or of the first
  byte of its next request, else it is closed (with a 408 when part of a head came). Idle keep-alive time
  between requests stays uvicorn's `timeout_keep_alive`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from mlx_router.api.errors import error_body

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
_FD_HEADROOM = 256  # descriptors beyond the connections: model files, the engine's pipes, logs, the listener


async def too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app that answers every request on a connection over the limit."""
    if scope["type"] != "http":
        return
    body = json.dumps(
        error_body(
            "the server has too many open connections; retry shortly",
            "server_error",
            code="too_many_connections",
        )
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _timeout_response() -> bytes:
    body = json.dumps(
        error_body("the request head did not arrive in time", "invalid_request_error", code="request_timeout")
    ).encode()
    head = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
    )
    return head + body


def bounded_http_protocol(max_connections: int, head_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class with the limits above, for `uvicorn.run(http=...)`."""
    base: Any = AutoHTTPProtocol

    class BoundedHTTPProtocol(base):
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_started = False  # bytes of an unfinished head arrived
            self._last_cycle: Any = None
            if len(self.connections) > max_connections:
                self.app = too_many_connections
                logger.warning("%d connections open: answering a new one with 503", len(self.connections))
            self._arm_head_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not self._last_cycle:  # a request head was completed (a new request began)
                self._last_cycle = self.cycle
                self._disarm_head_timer()
            elif self.cycle is None or self.cycle.response_complete:  # part of the next head
                self._head_started = True
                if self._head_timer is None:
                    self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(head_timeout, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            self._head_started = False

        def _head_timed_out(self) -> None:
            self._head_timer = None
            transport = self.transport
            # a connection upgraded to another protocol (websocket) is no longer this one's to close
            if transport.is_closing() or transport.get_protocol() is not self:
                return
            if self._head_started:
                transport.write(_timeout_response())
            transport.close()

    BoundedHTTPProtocol.__name__ = f"Bounded{base.__name__}"
    return BoundedHTTPProtocol


def raise_fd_limit(max_connections: int, target: int = 65536) -> int:
    """Raise this process's soft limit on open files towards `target` (never above the hard limit), and at
    least to what `max_connections` need; the limit in force is returned.

    Connections beyond `max_connections` are answered, so they need descriptors too until they send their
    request or time out: a flood of idle connections must hit the connection limit long before the
    descriptor limit, past which the kernel's accept fails and clients are reset (macOS starts processes
    with 256)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + _FD_HEADROOM
    if soft == resource.RLIM_INFINITY:
        return target
    for new in (max(target, wanted), wanted):
        if new <= soft:
            break
        new = new if hard == resource.RLIM_INFINITY else min(new, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
            break
        except (ValueError, OSError):  # e.g. above macOS's kern.maxfilesperproc: try the smaller one
            continue
    if soft < wanted:
        logger.warning(
            "the open-file limit (%d) is below server.max_connections (%d) + %d: lower max_connections or raise "
            "the limit (ulimit -n), or clients beyond it are reset instead of answered",
            soft,
            max_connections,
            _FD_HEADROOM,
        )
    return int(soft)
