"""POST /v1/responses (OpenAI Responses: Codex, the Agents SDK)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlx_router.api.deps import ServicesDep
from mlx_router.api.negotiation import wants_stream
from mlx_router.api.request_log import request_record
from mlx_router.api.responses import stream_response, unary_response
from mlx_router.api.sse import NamedEvent, NamedEvents
from mlx_router.protocol.responses import ResponsesRequest
from mlx_router.protocol.responses_output import ResponseObject, StreamEvent
from mlx_router.serving.responses import ResponsesRun

router = APIRouter(tags=["responses"])


@router.post("/v1/responses", response_model=ResponseObject)
async def create_response(body: ResponsesRequest, request: Request, s: ServicesDep) -> Response:
    record = request_record(request)
    record.model = body.model
    history = s.responses.history(body)
    prepared = await s.preparer.prepare(body.to_conversation(history), record.id, "resp")
    session = s.generation.session(prepared)
    record.attach(session, s.metrics)
    run = ResponsesRun(body, history, prepared)
    if wants_stream(body.stream, request.headers.get("accept"), s.settings.defaults.stream):
        # a failure mid-stream ends it with response.failed, numbered in the stream's sequence
        named = NamedEvents(error=lambda e: _named(run.builder.failed(e)))
        events = lambda: _all_named(s.responses.stream(run, session))  # noqa: E731
        return await stream_response(session, events, s.settings.defaults, named)
    return await unary_response(request, session, lambda: s.responses.complete(run, session))


def _named(event: StreamEvent) -> NamedEvent:
    return NamedEvent(event.type, event)


async def _all_named(events: AsyncIterator[StreamEvent]) -> AsyncIterator[NamedEvent]:
    try:
        async for event in events:
            yield _named(event)
    finally:
        await events.aclose()  # type: ignore[attr-defined]  # an async generator
