"""Running a generation session as an HTTP response: streamed, or whole while watching for a disconnect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from mlx_router.api.sse import MEDIA_TYPES, STREAM_HEADERS, NamedEvent, NamedEvents, encode_stream
from mlx_router.config.settings import DefaultsConfig
from mlx_router.serving.session import GenerationSession

DISCONNECT_POLL_SECONDS = 0.25


class _SessionStream(StreamingResponse):
    """A streamed session, ended however the response ends: also when the body never starts (a client that
    left while the headers were sent), since the session may already be queued on the engine."""

    def __init__(self, body: AsyncIterator[str], session: GenerationSession, media_type: str) -> None:
        super().__init__(body, media_type=media_type, headers=STREAM_HEADERS)
        self._session = session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._session.__aexit__(None, None, None)


async def stream_response(
    session: GenerationSession,
    chunks: Callable[[], AsyncIterator[BaseModel | str]] | Callable[[], AsyncIterator[NamedEvent]],
    defaults: DefaultsConfig,
    named: NamedEvents | None = None,
) -> StreamingResponse:
    """Admit the session (429/503 are raised here, as plain HTTP errors), then stream its chunks: in the
    server's `streaming_format`, or with `named` as SSE named events (the APIs that define their own)."""
    await session.__aenter__()

    async def close() -> None:
        await session.__aexit__(None, None, None)

    fmt = named if named is not None else defaults.streaming_format
    body = encode_stream(chunks(), fmt, defaults.keepalive_seconds, on_close=close)
    return _SessionStream(body, session, MEDIA_TYPES["sse" if named is not None else defaults.streaming_format])


async def unary_response(
    request: Request, session: GenerationSession, run: Callable[[], Awaitable[BaseModel]]
) -> Response:
    """Run to the end and answer in one JSON body; a client that leaves cancels the generation."""
    async with session:
        task = asyncio.ensure_future(run())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
                if done:
                    break
                if await request.is_disconnected():
                    task.cancel()
                    return Response(status_code=499)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        result = task.result()
    return JSONResponse(result.model_dump(mode="json"))
