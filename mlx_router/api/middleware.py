"""ASGI middleware, answering in the error envelope of the API the path belongs to (`api/errors.py`): the Host
header check (421), the request body size limit (413) and optional API keys (401)."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlx_router.api.errors import error_body_for
from mlx_router.errors import AuthenticationError, RequestTooLargeError, RouterError
from mlx_router.heap import trim_heap

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRIM_AFTER_BYTES = 1 << 20  # a request body this large is followed by giving the heap's free pages back
OPEN_PATHS = ("/health", "/docs", "/openapi.json", "/redoc", "/", "/ui")
OPEN_PREFIXES = ("/ui/", "/docs/")  # the pages' static files; the data they show needs the key


async def _send_error(scope: Scope, send: Send, error: RouterError) -> None:
    """The same envelope and status the app's error table gives `error`, sent from outside the app."""
    payload = json.dumps(error_body_for(scope.get("path", ""), error)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class BodyLimitMiddleware:
    """Refuses bodies over `max_bytes` with 413: by Content-Length up front, a chunked body (no length) by
    reading it here first, a body longer than its Content-Length while the app reads it. Once a request with a
    large body is answered, the memory its handling took (JSON, prompt, tokenizer buffers) goes back to the
    system (mlx_router/heap.py)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = 0
        try:
            size = await self._handle(scope, receive, send)
        finally:
            if size >= TRIM_AFTER_BYTES:
                await asyncio.to_thread(trim_heap)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Serve the request within the limit; the body's size (as far as it was read) is returned."""
        length = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                length = value
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _send_error(scope, send, self._too_large())
            return 0
        if length is None:
            # FastAPI answers any failure while it reads a body with a 400, so a chunked body is read (and
            # measured) here, before the app sees it, and handed over whole.
            try:
                body = await self._read_limited(receive)
            except _ClientGone:  # nobody to answer
                return 0
            if body is None:
                await _send_error(scope, send, self._too_large())
                return self.max_bytes
            await self.app(scope, _replay(body, receive), send)
            return len(body)
        return await self._run_counted(scope, receive, send)

    async def _read_limited(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (the rest is left unread)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _run_counted(self, scope: Scope, receive: Receive, send: Send) -> int:
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_error(scope, send, self._too_large())
        return received

    def _too_large(self) -> RequestTooLargeError:
        return RequestTooLargeError(f"the request body is larger than {self.max_bytes / 1024**2:g} MB")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives `body` as one message, then whatever the connection sends (a disconnect)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class APIKeyMiddleware:
    """Requires `Authorization: Bearer <key>` (or `x-api-key`) on every path but health and the pages (docs,
    dashboard), which hold no data."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path in OPEN_PATHS
            or path.startswith(OPEN_PREFIXES)
            or scope.get("method") == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.lower().startswith(b"bearer "):
                given = value[7:].strip()
            elif name == b"x-api-key" and not given:
                given = value.strip()
        if not any(hmac.compare_digest(given, k) for k in self.keys):
            await _send_error(scope, send, AuthenticationError("invalid or missing API key"))
            return
        await self.app(scope, receive, send)


class HostNotAllowedError(RouterError):
    """The request names a host this server does not answer to (421 Misdirected Request)."""

    status = 421
    type = "invalid_request_error"
    code = "host_not_allowed"


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name, without port) can only mean this machine."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback, never looked up
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(value: bytes) -> str:
    """The host of a Host header, without the port (an IPv6 address keeps its brackets off)."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class HostCheckMiddleware:
    """421 for a request whose Host header names a host this server does not answer to.

    A request that arrives on a loopback address must name a loopback host (localhost, 127.0.0.1, [::1]) or
    one listed in `server.allowed_hosts`: a web page whose DNS name an attacker rebinds to 127.0.0.1 still
    sends its own name, so it cannot drive the API from the user's browser. A request arriving on another
    address is checked only when the list is given. "*" in the list accepts any name; "*.example.com" a
    domain's names. A request without a Host header (HTTP/1.0, never a browser) passes.
    """

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        names = [h.lower().rstrip(".") for h in allowed]
        self.any = "*" in names
        self.listed = bool(names)
        self.exact = frozenset(h for h in names if not h.startswith("*."))
        self.suffixes = tuple(h[1:] for h in names if h.startswith("*."))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.any:
            server = scope.get("server") or ("", None)
            if self.listed or is_loopback(str(server[0])):
                for name, value in scope.get("headers", []):
                    if name == b"host":
                        host = _host_name(value).rstrip(".")
                        if not self._allowed(host):
                            await _send_error(scope, send, self._refusal(host))
                            return
                        break
        await self.app(scope, receive, send)

    def _allowed(self, host: str) -> bool:
        return is_loopback(host) or host in self.exact or host.endswith(self.suffixes)

    @staticmethod
    def _refusal(host: str) -> HostNotAllowedError:
        shown = host.encode("ascii", "backslashreplace").decode()[:100]
        return HostNotAllowedError(
            f"this server does not answer to the host name {shown!r}; to serve it, add it to "
            "server.allowed_hosts in the configuration"
        )
