"""One table from exception to HTTP response, in OpenAI's error envelope. Never a stack trace, never a 422."""

from __future__ import annotations

import logging
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


def internal_error_body() -> dict[str, Any]:
    return error_body("The server had an error while processing your request.", "server_error", None, "internal_error")


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


async def _router_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RouterError)
    if exc.status >= 500:
        logger.warning("%s: %s", type(exc).__name__, exc.message)
    return JSONResponse(router_error_body(exc), status_code=exc.status, headers=exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = validation_message(exc)
    return JSONResponse(error_body(message, "invalid_request_error", param), status_code=400)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body = error_body(str(exc.detail), _HTTP_TYPES.get(exc.status_code, "invalid_request_error"))
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return JSONResponse(internal_error_body(), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RouterError, _router_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
