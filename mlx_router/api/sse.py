"""Streaming bodies: SSE (OpenAI's), JSON lines or one JSON array; keep-alives while nothing is generated.

A failure mid-stream becomes an error event followed by the end marker, so clients always see a clean end.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel

from mlx_router.api.errors import internal_error_body, router_error_body
from mlx_router.errors import RouterError

logger = logging.getLogger(__name__)

StreamFormat = Literal["sse", "json_lines", "json_array"]

MEDIA_TYPES = {
    "sse": "text/event-stream",
    "json_lines": "application/x-ndjson",
    "json_array": "application/json",
}
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class _Encoder:
    def __init__(self, fmt: StreamFormat) -> None:
        self.fmt = fmt
        self._items = 0

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


def chunk_json(chunk: BaseModel) -> str:
    """A chunk without null fields, except `finish_reason`, which OpenAI always sends."""
    data: dict[str, Any] = chunk.model_dump(exclude_none=True)
    for choice in data.get("choices", []):
        choice.setdefault("finish_reason", None)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


async def encode_stream(
    chunks: AsyncIterator[BaseModel],
    fmt: StreamFormat,
    keepalive_seconds: float,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[str]:
    """Encode chunks as they come, with keep-alives every `keepalive_seconds` of silence."""
    enc = _Encoder(fmt)
    pending: asyncio.Future[BaseModel] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(chunks.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=keepalive_seconds)
            if not done:
                yield enc.keepalive()
                continue
            finished, pending = pending, None
            try:
                chunk = finished.result()
            except StopAsyncIteration:
                break
            yield enc.item(chunk_json(chunk))
    except RouterError as e:
        yield enc.item(json.dumps(router_error_body(e)))
    except Exception:
        logger.exception("stream failed")
        yield enc.item(json.dumps(internal_error_body()))
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            try:
                await pending
            except (asyncio.CancelledError, StopAsyncIteration, Exception):
                pass
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
        if on_close is not None:
            await on_close()
    yield enc.end()
