"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlx_router.api.deps import ServicesDep
from mlx_router.api.negotiation import wants_stream
from mlx_router.api.request_log import request_record
from mlx_router.api.responses import stream_response, unary_response
from mlx_router.protocol.chat import ChatCompletionRequest, ChatCompletionResponse

router = APIRouter(tags=["chat"])


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, s: ServicesDep) -> Response:
    record = request_record(request)
    record.model = body.model
    prepared = await s.preparer.prepare(body.to_conversation(), record.id, "chatcmpl")
    session = s.generation.session(prepared)
    record.attach(session, s.metrics)  # its tokens, times and end go into the request's end line and metrics
    if wants_stream(body.stream, request.headers.get("accept"), s.settings.defaults.stream):
        usage = body.stream_options is not None and body.stream_options.include_usage
        return await stream_response(session, lambda: s.chat.stream(prepared, session, usage), s.settings.defaults)
    return await unary_response(request, session, lambda: s.chat.complete(prepared, session))
