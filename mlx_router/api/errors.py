"""One table from exception to HTTP response, in the envelope of the API the path belongs to (OpenAI's unless a
prefix of `API_ENVELOPES` names another). Never a stack trace, never a 422."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlx_router.errors import RouterError

logger = logging.getLogger(__name__)

_HTTP_TYPES = {
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def router_error_body(e: RouterError) -> dict[str, Any]:
    return error_body(e.message, e.type, e.param, e.code)


class InternalError(RouterError):
    """What a client is told of an unexpected failure: nothing of its internals."""

    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self) -> None:
        super().__init__("The server had an error while processing your request.")


# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors); other 4xx are invalid requests,
# other 5xx api errors. A 503 (no memory, engine restarting) is its `overloaded_error`, which clients retry.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_body(e: RouterError) -> dict[str, Any]:
    """Anthropic's envelope: `{"type": "error", "error": {"type", "message"}}`."""
    type_ = _ANTHROPIC_TYPES.get(e.status) or ("api_error" if e.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": type_, "message": e.message}}


ErrorEnvelope = Callable[[RouterError], dict[str, Any]]

# The APIs whose errors are not in OpenAI's envelope, by the prefix of their paths.
API_ENVELOPES: tuple[tuple[str, ErrorEnvelope], ...] = (("/v1/messages", anthropic_error_body),)


def envelope_for(path: str) -> ErrorEnvelope:
    """The error envelope of the API `path` belongs to."""
    for prefix, envelope in API_ENVELOPES:
        if path == prefix or path.startswith(prefix + "/"):
            return envelope
    return router_error_body


def error_body_for(path: str, e: RouterError) -> dict[str, Any]:
    return envelope_for(path)(e)


class _HTTPStatusError(RouterError):
    """A plain HTTP error (unknown path, wrong method) carried to an envelope."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = _HTTP_TYPES.get(status, "invalid_request_error")


class _ValidationFailure(RouterError):
    status = 400
    type = "invalid_request_error"


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """A readable message for the first validation error, and the field it names."""
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    if first.get("type") == "missing" and not loc:
        return "the request body is missing", None
    # A check of the whole body (a model validator) names the field it refused in its context.
    param = ".".join(loc) or (first.get("ctx") or {}).get("param") or None
    msg = first.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return (f"{param}: {msg}" if param else msg), param


async def _router_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RouterError)
    if exc.status >= 500:
        logger.warning("%s: %s", type(exc).__name__, exc.message)
    return JSONResponse(error_body_for(request.url.path, exc), status_code=exc.status, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = validation_message(exc)
    body = error_body_for(request.url.path, _ValidationFailure(message, param=param))
    return JSONResponse(body, status_code=400)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body = error_body_for(request.url.path, _HTTPStatusError(exc.status_code, str(exc.detail)))
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body_for(request.url.path, InternalError()), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RouterError, _router_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
