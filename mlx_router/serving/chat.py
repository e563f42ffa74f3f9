"""Chat Completions' renderer: the generation service's events as OpenAI's response or chunk stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from mlx_router.engine.params import TokenLogprob
from mlx_router.parsing.events import (
    ContentDelta,
    OutputEvent,
    ReasoningDelta,
    ToolCallArgsDelta,
    ToolCallStart,
    collect,
)
from mlx_router.protocol.chat import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChunkTemplate,
    DeltaMessage,
    ToolCallDelta,
    ToolCallFunctionDelta,
    ToolCallFunctionOut,
    ToolCallOut,
)
from mlx_router.protocol.common import ChoiceLogprobs, PromptTokensDetails, TokenLogprobOut, TopLogprob, Usage
from mlx_router.serving.generation import Finished, GenerationService, LogprobsDelta
from mlx_router.serving.prepare import PreparedGeneration
from mlx_router.serving.session import GenerationSession, UsageCounts


def usage_of(counts: UsageCounts) -> Usage:
    return Usage(
        prompt_tokens=counts.prompt_tokens,
        completion_tokens=counts.completion_tokens,
        total_tokens=counts.prompt_tokens + counts.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=counts.cached_tokens),
    )


def logprobs_out(tokenizer: Any, items: list[TokenLogprob]) -> ChoiceLogprobs:
    def piece(token: int) -> tuple[str, list[int]]:
        text = tokenizer.decode([token])
        return text, list(text.encode("utf-8"))

    content = []
    for it in items:
        text, raw = piece(it.token)
        tops = [TopLogprob(token=piece(t)[0], logprob=lp, bytes=piece(t)[1]) for t, lp in it.top]
        content.append(TokenLogprobOut(token=text, logprob=it.logprob, bytes=raw, top_logprobs=tops))
    return ChoiceLogprobs(content=content)


class ChatRenderer:
    """Chat Completions over the generation service: its response, and its chunk stream."""

    def __init__(self, generation: GenerationService) -> None:
        self._generation = generation

    async def complete(self, p: PreparedGeneration, session: GenerationSession) -> ChatCompletionResponse:
        logprobs: list[TokenLogprob] = []
        output: list[OutputEvent] = []
        finished: Finished | None = None
        async for event in self._generation.events(p, session, stream=False):
            if isinstance(event, LogprobsDelta):
                logprobs.extend(event.items)
            elif isinstance(event, Finished):
                finished = event
            else:
                output.append(event)
        assert finished is not None
        parsed = collect(output)
        calls = parsed.tool_calls
        message = AssistantMessage(
            content=(parsed.content or None) if calls else (parsed.content or ""),
            reasoning_content=parsed.reasoning or None,
            tool_calls=[
                ToolCallOut(id=c.id, function=ToolCallFunctionOut(name=c.name, arguments=c.arguments)) for c in calls
            ]
            or None,
        )
        choice = ChatChoice(
            message=message,
            finish_reason=finished.reason,
            logprobs=(logprobs_out(p.profile.tokenizer, logprobs) if p.generation.logprobs is not None else None),
        )
        model = p.conversation.model
        return ChatCompletionResponse(
            id=p.id, created=p.created, model=model, choices=[choice], usage=usage_of(finished.usage)
        )

    async def stream(
        self, p: PreparedGeneration, session: GenerationSession, include_usage: bool = False
    ) -> AsyncIterator[ChatCompletionChunk | str]:
        """Chunks as tokens arrive: role first, then deltas, then finish_reason, then usage if asked. A delta
        of plain text comes as its chunk's JSON already (`ChunkTemplate`)."""
        shaper = _ChunkShaper(p)
        yield shaper.chunk(DeltaMessage(role="assistant", content=""))
        held: list[TokenLogprob] = []  # logprobs of tokens whose text has not gone out yet
        finished: Finished | None = None
        async for event in self._generation.events(p, session, stream=True):
            if isinstance(event, LogprobsDelta):
                held.extend(event.items)
            elif isinstance(event, Finished):
                finished = event
            else:
                for out in self._deltas(p, shaper, [event], held):
                    yield out
        assert finished is not None
        yield shaper.chunk(DeltaMessage(), finish_reason=finished.reason)
        if include_usage:
            yield ChatCompletionChunk(
                id=p.id, created=p.created, model=p.conversation.model, choices=[], usage=usage_of(finished.usage)
            )

    @staticmethod
    def _deltas(
        p: PreparedGeneration, shaper: _ChunkShaper, events: list[OutputEvent], held: list[TokenLogprob]
    ) -> Iterator[ChatCompletionChunk | str]:
        """Events as chat chunks; the logprobs held so far ride on the first (and are taken from `held`)."""
        for delta in shaper.deltas(events):
            if not held and (text := shaper.text_json(delta)) is not None:
                yield text
                continue
            lp = logprobs_out(p.profile.tokenizer, held) if held else None
            held.clear()
            yield shaper.chunk(delta, logprobs=lp)


class _ChunkShaper:
    """Turns parser events into chunk deltas, merging runs of the same kind."""

    def __init__(self, p: PreparedGeneration) -> None:
        self._p = p
        self._template = ChunkTemplate(p.id, p.created, p.conversation.model)

    def chunk(
        self, delta: DeltaMessage, finish_reason: str | None = None, logprobs: ChoiceLogprobs | None = None
    ) -> ChatCompletionChunk:
        choice = ChatChunkChoice(delta=delta, finish_reason=finish_reason, logprobs=logprobs)
        return ChatCompletionChunk(
            id=self._p.id, created=self._p.created, model=self._p.conversation.model, choices=[choice]
        )

    def text_json(self, delta: DeltaMessage) -> str | None:
        """The chunk's JSON when `delta` is text alone (content or reasoning), else None."""
        if delta.role is not None or delta.tool_calls is not None:
            return None
        if delta.reasoning_content is None and delta.content is not None:
            return self._template.text("content", delta.content)
        if delta.content is None and delta.reasoning_content is not None:
            return self._template.text("reasoning_content", delta.reasoning_content)
        return None

    def deltas(self, events: list[OutputEvent]) -> list[DeltaMessage]:
        out: list[DeltaMessage] = []
        for ev in events:
            delta = self._delta(ev)
            if delta is None:
                continue
            last = out[-1] if out else None
            if last is not None and _mergeable(last, delta):
                if delta.content is not None:
                    last.content = (last.content or "") + delta.content
                if delta.reasoning_content is not None:
                    last.reasoning_content = (last.reasoning_content or "") + delta.reasoning_content
            else:
                out.append(delta)
        return out

    def _delta(self, ev: OutputEvent) -> DeltaMessage | None:
        if isinstance(ev, ContentDelta):
            return DeltaMessage(content=ev.text) if ev.text else None
        if isinstance(ev, ReasoningDelta):
            return DeltaMessage(reasoning_content=ev.text) if ev.text else None
        if isinstance(ev, ToolCallStart):
            fn = ToolCallFunctionDelta(name=ev.name, arguments="")
            call = ToolCallDelta(index=ev.index, id=ev.id, type="function", function=fn)
            return DeltaMessage(tool_calls=[call])
        if isinstance(ev, ToolCallArgsDelta):
            if not ev.text:
                return None
            fn = ToolCallFunctionDelta(arguments=ev.text)
            return DeltaMessage(tool_calls=[ToolCallDelta(index=ev.index, function=fn)])
        return None


def _mergeable(a: DeltaMessage, b: DeltaMessage) -> bool:
    if a.tool_calls or b.tool_calls:
        return False
    return (a.content is None) == (b.content is None) and (a.reasoning_content is None) == (b.reasoning_content is None)
