"""What travels between the HTTP side and the engine (see `core/host.py` for the messages): plain tuples of
picklable values. A token event travels as a tuple: pickling a few small tuples per step costs the engine's
worker thread less than pickling dataclasses. No mlx here: the HTTP side imports this."""

from __future__ import annotations

from typing import Any

from mlx_router.engine.params import TokenEvent
from mlx_router.errors import RouterError

Message = tuple[Any, ...]


def event_tuple(event: TokenEvent) -> tuple[Any, ...]:
    error = event.error
    if error is not None and not isinstance(error, RouterError):
        error = RuntimeError(f"{type(error).__name__}: {error}")  # any exception, in a form that pickles
    return (
        event.tokens,
        event.logprobs,
        event.finish_reason,
        event.prompt_tokens,
        event.cached_tokens,
        error,
        event.queue_seconds,
    )


def event_from_tuple(t: tuple[Any, ...]) -> TokenEvent:
    return TokenEvent(t[0], t[1], t[2], t[3], t[4], t[5], t[6])
