"""Streaming bodies: SSE (OpenAI's `data:` lines, or named events for the APIs that use `event:` lines), JSON
lines or one JSON array; keep-alives while nothing is generated.

A failure mid-stream becomes an error event followed by the end marker, so clients always see a clean end.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from mlx_router.api.errors import InternalError, router_error_body
from mlx_router.errors import RouterError

logger = logging.getLogger(__name__)

StreamFormat = Literal["sse", "json_lines", "json_array"]

MEDIA_TYPES = {
    "sse": "text/event-stream",
    "json_lines": "application/x-ndjson",
    "json_array": "application/json",
}
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class NamedEvent:
    """An SSE event with an `event:` line (Anthropic Messages, Responses). `data`: a model (dumped whole, nulls
    included), a dict, or its JSON text already."""

    name: str
    data: BaseModel | dict[str, Any] | str


def encode_named_event(name: str, data: BaseModel | dict[str, Any] | str) -> str:
    """`event: <name>` and `data: <json>`, one SSE event."""
    if isinstance(data, BaseModel):
        text = data.model_dump_json()
    elif isinstance(data, dict):
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    else:
        text = data
    return f"event: {name}\ndata: {text}\n\n"


@dataclass(frozen=True)
class NamedEvents:
    """How an API with named events streams (its chunks are `NamedEvent`s): the event that tells a failure
    (built from the error; an unexpected failure comes as `InternalError`), and its keep-alive (None: an SSE
    comment). Such a stream has no end marker."""

    error: Callable[[RouterError], NamedEvent]
    keepalive: NamedEvent | None = None


class _Encoder:
    """OpenAI's framings: SSE `data:` lines ended by [DONE], JSON lines, or one JSON array."""

    def __init__(self, fmt: StreamFormat) -> None:
        self.fmt = fmt
        self._items = 0

    def chunk(self, value: Any) -> str:
        return self.item(value if isinstance(value, str) else chunk_json(value))

    def error(self, e: RouterError) -> str:
        return self.item(json.dumps(router_error_body(e)))

    def item(self, payload: str) -> str:
        if self.fmt == "sse":
            return f"data: {payload}\n\n"
        if self.fmt == "json_lines":
            return payload + "\n"
        sep = "[" if self._items == 0 else ","
        self._items += 1
        return sep + payload

    def keepalive(self) -> str:
        if self.fmt == "sse":
            return ": keep-alive\n\n"
        if self.fmt == "json_lines":
            return "\n"
        return " "  # whitespace is valid before and inside a JSON array

    def end(self) -> str:
        if self.fmt == "sse":
            return "data: [DONE]\n\n"
        if self.fmt == "json_lines":
            return ""
        return "[]" if self._items == 0 else "]"


class _NamedEncoder:
    def __init__(self, style: NamedEvents) -> None:
        self.style = style

    def chunk(self, value: Any) -> str:
        if not isinstance(value, NamedEvent):
            raise TypeError(f"a stream of named events got {type(value).__name__}")
        return encode_named_event(value.name, value.data)

    def error(self, e: RouterError) -> str:
        event = self.style.error(e)
        return encode_named_event(event.name, event.data)

    def keepalive(self) -> str:
        ping = self.style.keepalive
        return ": keep-alive\n\n" if ping is None else encode_named_event(ping.name, ping.data)

    def end(self) -> str:
        return ""


def chunk_json(chunk: BaseModel) -> str:
    """A chunk without null fields, except `finish_reason`, which OpenAI always sends."""
    data: dict[str, Any] = chunk.model_dump(exclude_none=True)
    for choice in data.get("choices", []):
        choice.setdefault("finish_reason", None)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


async def encode_stream(
    chunks: AsyncIterator[BaseModel | str] | AsyncIterator[NamedEvent],
    fmt: StreamFormat | NamedEvents,
    keepalive_seconds: float,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[str]:
    """Encode chunks as they come (a `str` is a chunk's JSON already; with `NamedEvents` every chunk is a
    `NamedEvent`), with keep-alives every `keepalive_seconds` of silence.

    The chunks are read by a task of their own into a queue, so that a keep-alive can go out while the
    next chunk is awaited; per chunk that costs a queue put and get, where racing each chunk against a timeout
    cost a task, a waiter and a timer. Chunks that queued up while the socket was busy leave in one write.
    """
    enc = _NamedEncoder(fmt) if isinstance(fmt, NamedEvents) else _Encoder(fmt)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    pump = loop.create_task(_pump(chunks, queue))
    keepalive = _KeepAlive(loop, keepalive_seconds, queue)
    finished = False
    try:
        while not finished:
            kind, value = await queue.get()
            out: list[str] = []
            while True:
                if kind == "chunk":
                    keepalive.touch()
                    out.append(enc.chunk(value))
                elif kind == "keepalive":
                    out.append(enc.keepalive())
                else:  # the end, or an error: the error's event comes last
                    finished = True
                    if value is not None:
                        out.append(enc.error(value))
                    break
                if queue.empty():
                    break
                kind, value = queue.get_nowait()
            yield "".join(out)
    finally:
        keepalive.cancel()
        if not pump.done():
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
        if on_close is not None:
            await on_close()
    yield enc.end()


async def _pump(chunks: AsyncIterator[Any], queue: asyncio.Queue[tuple[str, Any]]) -> None:
    """Read every chunk into `queue`, then ("end", None), or ("end", the error) when the chunks fail."""
    try:
        async for chunk in chunks:
            queue.put_nowait(("chunk", chunk))
    except RouterError as e:
        queue.put_nowait(("end", e))
    except Exception:
        logger.exception("stream failed")
        queue.put_nowait(("end", InternalError()))
    else:
        queue.put_nowait(("end", None))


class _KeepAlive:
    """Queues a keep-alive whenever `seconds` pass without a chunk: one timer that wakes every `seconds` and
    looks at when the last chunk went out, so a chunk costs only a clock reading."""

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        self._loop = loop
        self._seconds = seconds
        self._queue = queue
        self._last = loop.time()
        self._timer = loop.call_later(seconds, self._check)

    def touch(self) -> None:
        self._last = self._loop.time()

    def _check(self) -> None:
        idle = self._loop.time() - self._last
        if idle >= self._seconds:
            self._queue.put_nowait(("keepalive", None))
            self._last, idle = self._loop.time(), 0.0
        self._timer = self._loop.call_later(self._seconds - idle, self._check)

    def cancel(self) -> None:
        self._timer.cancel()
