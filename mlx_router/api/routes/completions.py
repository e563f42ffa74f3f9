"""POST /v1/completions (legacy prompt completion)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlx_router.api.deps import ServicesDep
from mlx_router.api.negotiation import wants_stream
from mlx_router.api.request_log import request_record
from mlx_router.api.responses import stream_response, unary_response
from mlx_router.protocol.completions import CompletionRequest, CompletionResponse

router = APIRouter(tags=["completions"])


@router.post("/v1/completions", response_model=CompletionResponse)
async def create_completion(body: CompletionRequest, request: Request, s: ServicesDep) -> Response:
    record = request_record(request)
    record.model = body.model
    prepared = await s.completions.prepare(body, record.id)
    session = s.completions.session(prepared)
    record.attach(session, s.metrics)  # its tokens, times and end go into the request's end line and metrics
    if wants_stream(body.stream, request.headers.get("accept"), s.settings.defaults.stream):
        return await stream_response(session, lambda: s.completions.stream(prepared, session), s.settings.defaults)
    return await unary_response(request, session, lambda: s.completions.complete(prepared, session))
