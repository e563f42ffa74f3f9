"""The exceptions the server raises on purpose, each knowing its HTTP status and OpenAI error type.

`mlx_router.api.errors` turns them into OpenAI's envelope; anything else becomes a 500 without internals.
"""

from __future__ import annotations

from typing import Any


class RouterError(Exception):
    """Base of every error a client is meant to see."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    @property
    def headers(self) -> dict[str, str]:
        return {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take different arguments: rebuilt from the message and the attributes, so an error
        # raised in the engine's process reaches the HTTP side whole.
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls: type[RouterError], message: str, state: dict[str, Any]) -> RouterError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class InvalidRequestError(RouterError):
    """The request cannot be served as sent (400)."""

    status = 400
    type = "invalid_request_error"


class TemplateRejectedError(InvalidRequestError):
    """The model's chat template refused these messages (400), e.g. one that wants roles to alternate."""


class AuthenticationError(RouterError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFoundError(RouterError):
    """No model of that name in the model directories (404); nothing is downloaded."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str, skipped: str | None = None) -> None:
        """`skipped`: why a folder that would be this model cannot be served (discovery's reason)."""
        if skipped is None:
            message = f"The model '{model}' does not exist or is not installed"
        else:
            message = f"The model '{model}' is not served: its folder was skipped ({skipped})"
        super().__init__(message, param="model")


class RequestTooLargeError(RouterError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class _RetryableError(RouterError):
    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after + 0.999))

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class OverloadedError(_RetryableError):
    """The model's queue is full (429): retry later."""

    status = 429
    type = "rate_limit_error"
    code = "queue_full"


class InsufficientMemoryError(_RetryableError):
    """Not enough memory to load the model or hold the request's KV cache right now (503)."""

    status = 503
    type = "server_error"
    code = "insufficient_memory"


class ModelLoadError(RouterError):
    """The model folder exists but could not be loaded (500, with the reason)."""

    status = 500
    type = "server_error"
    code = "model_load_failed"


class RequestTimeoutError(RouterError):
    """The request ran past `defaults.timeout` (504)."""

    status = 504
    type = "server_error"
    code = "timeout"


class ModelUnloadedError(_RetryableError):
    """The model was unloaded (by an operator) while this request ran (503)."""

    status = 503
    type = "server_error"
    code = "model_unloaded"


class ServiceUnavailableError(_RetryableError):
    """The server cannot take the request now: its engine is restarting, or the server is shutting down (503)."""

    status = 503
    type = "server_error"
    code = "service_unavailable"
