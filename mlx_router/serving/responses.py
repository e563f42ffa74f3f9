"""Responses: a prepared conversation run by the generation service, rendered as OpenAI's Response or stream.

The request converts itself (`ResponsesRequest.to_conversation`), the core prepares and runs it, and
`ResponseBuilder` (`serving/response_builder.py`) turns the API-neutral events into items and stream events. A
finished response is kept for `previous_response_id` unless the request said `store: false`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from mlx_router.conversation.model import CustomTool
from mlx_router.protocol.responses import ResponsesRequest
from mlx_router.protocol.responses_output import Logprob, ResponseObject, StreamEvent
from mlx_router.serving.chat import logprobs_out
from mlx_router.serving.generation import Finished, GenerationService, LogprobsDelta
from mlx_router.serving.prepare import PreparedGeneration
from mlx_router.serving.response_builder import ResponseBuilder
from mlx_router.serving.response_store import ResponseStore
from mlx_router.serving.session import GenerationSession


class ResponsesRun:
    """One Responses request on its way: the request, the items it continues, its prepared generation."""

    def __init__(self, body: ResponsesRequest, history: list[Any], prepared: PreparedGeneration) -> None:
        self.body = body
        self.history = history
        self.prepared = prepared
        custom = {t.name for t in prepared.conversation.tools if isinstance(t, CustomTool)}
        self.builder = ResponseBuilder(_response_shell(body, prepared.created), custom)


class ResponsesService:
    """Runs Responses requests through the generation service and keeps recent ones in `store`."""

    def __init__(self, generation: GenerationService, store: ResponseStore) -> None:
        self._generation = generation
        self.store = store

    def history(self, body: ResponsesRequest) -> list[Any]:
        """The items `previous_response_id` names (a 400 when it is not stored), or none."""
        return self.store.history(body.previous_response_id) if body.previous_response_id else []

    async def complete(self, run: ResponsesRun, session: GenerationSession) -> ResponseObject:
        builder = run.builder
        async for event in self._generation.events(run.prepared, session, stream=False):
            if isinstance(event, Finished):
                builder.finish(*self._counts(run, event))
            elif isinstance(event, LogprobsDelta):
                builder.logprobs(_logprobs(run, event))
            else:
                builder.feed(event)
        self._keep(run)
        return builder.response

    async def stream(self, run: ResponsesRun, session: GenerationSession) -> AsyncIterator[StreamEvent]:
        """The stream events as the tokens come (a failure's `response.failed`: `run.builder.failed`)."""
        builder = run.builder
        for ev in builder.start():
            yield ev
        async for event in self._generation.events(run.prepared, session, stream=True):
            if isinstance(event, Finished):
                out = builder.finish(*self._counts(run, event))
                self._keep(run)
            elif isinstance(event, LogprobsDelta):
                builder.logprobs(_logprobs(run, event))
                continue
            else:
                out = builder.feed(event)
            for ev in out:
                yield ev

    @staticmethod
    def _counts(run: ResponsesRun, finished: Finished) -> tuple[str, int, int, int, int]:
        usage = finished.usage
        reasoning = "".join(
            part.text for item in run.builder.response.output if item.type == "reasoning" for part in item.content
        )
        # the tokens of the thinking as written (an estimate when the tokenizer spells it otherwise)
        tokenizer = run.prepared.profile.tokenizer
        thought = len(tokenizer.encode(reasoning, add_special_tokens=False)) if reasoning else 0
        used = usage.completion_tokens
        return finished.reason, usage.prompt_tokens, used, usage.cached_tokens, min(thought, used)

    def _keep(self, run: ResponsesRun) -> None:
        if run.body.store is not False:
            response = run.builder.response
            self.store.put(response.id, [*run.history, *run.body.input_items()], list(response.output))


def _logprobs(run: ResponsesRun, event: LogprobsDelta) -> list[Logprob]:
    """The tokens' logprobs as chat writes them (token text, bytes, top alternatives), in Responses' type."""
    content = logprobs_out(run.prepared.profile.tokenizer, event.items).content or []
    return [Logprob.model_validate(token.model_dump()) for token in content]


def _response_shell(body: ResponsesRequest, created: int) -> ResponseObject:
    """The Response before any output: its id and the request's settings, echoed as OpenAI does."""
    fmt = body.text.format if body.text is not None and body.text.format is not None else None
    choice = body.tool_choice
    return ResponseObject(
        id=f"resp_{uuid.uuid4().hex}",  # not the request id: a client's X-Request-ID may repeat
        created_at=created,
        model=body.model,
        instructions=body.instructions
        if not isinstance(body.instructions, list)
        else [i.model_dump(exclude_none=True) for i in body.instructions],
        max_output_tokens=body.max_output_tokens,
        parallel_tool_calls=body.parallel_tool_calls is not False,
        previous_response_id=body.previous_response_id,
        reasoning={
            "effort": body.reasoning.effort if body.reasoning else None,
            "summary": body.reasoning.summary if body.reasoning else None,
        },
        store=body.store is not False,
        temperature=body.temperature,
        top_p=body.top_p,
        text={"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}},
        tool_choice=choice or "auto" if choice is None or isinstance(choice, str) else choice.model_dump(),
        tools=[t.model_dump(by_alias=True, exclude_none=True) for t in body.tools or []],
        metadata=body.metadata or {},
        user=body.user,
    )
