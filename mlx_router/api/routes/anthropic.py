"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API (Claude Code sends `?beta=true`
and `anthropic-beta` values; neither changes anything here). Errors under these paths come in Anthropic's
envelope (api/errors.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlx_router.api.deps import ServicesDep
from mlx_router.api.request_log import request_record
from mlx_router.api.responses import stream_response, unary_response
from mlx_router.conversation.model import Conversation
from mlx_router.errors import ModelNotFoundError, TemplateRejectedError
from mlx_router.protocol.anthropic import CountTokensRequest, MessagesRequest, fold_inner_system
from mlx_router.protocol.anthropic_response import CountTokensResponse, MessageResponse
from mlx_router.serving.anthropic import ANTHROPIC_EVENTS, MessageRenderer

router = APIRouter(tags=["anthropic"])
T = TypeVar("T")


@router.post("/v1/messages", response_model=MessageResponse)
async def create_message(body: MessagesRequest, request: Request, s: ServicesDep) -> Response:
    record = request_record(request)
    conv = body.to_conversation(s.settings.defaults.resolve_model(body.model))
    record.model = conv.model
    prepared = await _prepare(conv, body.model, lambda c: s.preparer.prepare(c, record.id, "msg"))
    session = s.generation.session(prepared)
    record.attach(session, s.metrics)
    renderer = MessageRenderer(prepared.id, body.model, len(prepared.generation.prompt_tokens))
    if body.stream:
        return await stream_response(
            session,
            lambda: renderer.stream(s.generation.events(prepared, session, stream=True)),
            s.settings.defaults,
            named=ANTHROPIC_EVENTS,
        )
    return await unary_response(
        request, session, lambda: renderer.message(s.generation.events(prepared, session, stream=False))
    )


@router.post("/v1/messages/count_tokens", response_model=CountTokensResponse)
async def count_message_tokens(body: CountTokensRequest, request: Request, s: ServicesDep) -> CountTokensResponse:
    """The prompt's tokens as the model would see them: the request rendered and encoded as for generation
    (template, tools, images), nothing run; a prompt past the model's context is counted, not refused."""
    record = request_record(request)
    conv = body.to_conversation(s.settings.defaults.resolve_model(body.model))
    record.model = conv.model
    count = await _prepare(conv, body.model, s.preparer.count_tokens)
    return CountTokensResponse(input_tokens=count)


async def _prepare(conv: Conversation, asked: str, step: Callable[[Conversation], Awaitable[T]]) -> T:
    """`step` (preparing or counting) of the conversation as sent; a template that refuses Claude Code's system
    messages inside the conversation gets them folded into the user turns beside them (`fold_inner_system`),
    still in place for the prefix cache. `asked`: the model name the client sent (Claude Code's are Anthropic's:
    the 404 says how to map them)."""
    try:
        return await step(conv)
    except ModelNotFoundError as e:
        if conv.model == asked:
            e.message += "; to serve this name with a local model, map it in defaults.model_aliases"
        raise
    except TemplateRejectedError:
        folded = fold_inner_system(conv)
        if folded is None:
            raise
        return await step(folded)
