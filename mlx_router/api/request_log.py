"""ASGI middleware: every request's id (`X-Request-ID`, in and out) and its end line and metrics, written once
it has ended, however it ended (`observability/requests.py`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request

from mlx_router.observability.metrics import RouterMetrics
from mlx_router.observability.requests import HEADER, RequestId, RequestRecord, finish

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_KEY = "request_record"  # in the request's state (`request.state.request_record`)
_HEADER = HEADER.encode()


class RequestLogMiddleware:
    """Gives each HTTP request a `RequestRecord` (in its state), answers with its id, and ends it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((value for name, value in scope.get("headers", []) if name == _HEADER), None)
        record = RequestRecord(RequestId.from_header(header), scope.get("method", ""), scope.get("path", ""))
        scope.setdefault("state", {})[STATE_KEY] = record
        id_header = (_HEADER, record.id.value.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            record.status = record.status or 500  # the error handler outside answers 500
            raise
        finally:
            finish(record, _metrics(scope))


def request_record(request: Request) -> RequestRecord:
    """The record of this request (a fresh one, logged nowhere, for an app without the middleware)."""
    record = request.scope.get("state", {}).get(STATE_KEY)
    if isinstance(record, RequestRecord):
        return record
    return RequestRecord(RequestId.new(), request.method, request.url.path)


def _metrics(scope: Scope) -> RouterMetrics | None:
    app = scope.get("app")
    services = getattr(getattr(app, "state", None), "services", None)
    metrics = getattr(services, "metrics", None)
    return metrics if isinstance(metrics, RouterMetrics) else None
