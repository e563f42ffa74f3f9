"""Chat completions: run a prepared request and shape its output as OpenAI's response or chunk stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from mlx_router.config.settings import Settings
from mlx_router.engine.interface import Engine
from mlx_router.engine.params import TokenLogprob
from mlx_router.parsing.events import (
    ContentDelta,
    OutputEvent,
    ParsedOutput,
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
from mlx_router.serving.chat_prepare import PreparedChat
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


class ChatService:
    """Runs chat completions through the engine."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._settings = settings
        self._engine = engine

    def session(self, p: PreparedChat) -> GenerationSession:
        d = self._settings.defaults
        return GenerationSession(
            self._engine, p.generation, p.profile.tokenizer, p.stops, d.timeout, d.stream_chunk_size
        )

    async def complete(self, p: PreparedChat, session: GenerationSession) -> ChatCompletionResponse:
        finish = "stop"
        logprobs: list[TokenLogprob] = []
        async for chunk in session.chunks():
            logprobs.extend(chunk.logprobs)
            finish = chunk.finish_reason or finish
        parsed = _parse_cut(p, session.text) if finish == "length" else p.pipeline().parse(session.text)
        calls = _limit_calls(parsed, p.tool_plan.parallel)
        message = AssistantMessage(
            content=(parsed.content or None) if calls else (parsed.content or ""),
            reasoning_content=parsed.reasoning or None,
            tool_calls=[
                ToolCallOut(id=c.id, function=ToolCallFunctionOut(name=c.name, arguments=c.arguments)) for c in calls
            ]
            or None,
        )
        if calls and finish != "length":  # a cut output says so, even after complete calls
            finish = "tool_calls"
        if not calls and not parsed.reasoning:
            self._remember_reply(p, session, parsed.content or "")
        choice = ChatChoice(
            message=message,
            finish_reason=finish,
            logprobs=(logprobs_out(p.profile.tokenizer, logprobs) if p.generation.logprobs is not None else None),
        )
        return ChatCompletionResponse(
            id=p.id, created=p.created, model=p.request.model, choices=[choice], usage=usage_of(session.usage)
        )

    def _remember_reply(self, p: PreparedChat, session: GenerationSession, content: str) -> None:
        """A reply the client gets as plain content, all of its tokens: the next turn, which sends it back,
        encodes it as the ids the model generated (`PromptEncoder.remember_reply`), so the prefix cache holds
        it to its end."""
        if self._settings.defaults.reuse_reply_tokens and session.whole and content == session.text:
            p.profile.prompts.remember_reply(p.prompt_text, session.token_ids, content)

    async def stream(self, p: PreparedChat, session: GenerationSession) -> AsyncIterator[ChatCompletionChunk | str]:
        """Chunks as tokens arrive: role first, then deltas, then finish_reason, then usage if asked. A delta
        of plain text comes as its chunk's JSON already (`ChunkTemplate`)."""
        pipeline = p.pipeline(stream=True)
        shaper = _ChunkShaper(p)
        yield shaper.chunk(DeltaMessage(role="assistant", content=""))
        finish = "stop"
        held_logprobs: list[TokenLogprob] = []
        content: list[str] = []
        plain = True  # the output is content alone, no reasoning and no calls
        async for chunk in session.chunks():
            held_logprobs.extend(chunk.logprobs)
            events = pipeline.feed(chunk.text) if chunk.text else []
            if chunk.finish_reason is not None:
                events += pipeline.finish(cut=chunk.finish_reason == "length")
                finish = chunk.finish_reason
            for ev in events:
                if isinstance(ev, ContentDelta):
                    content.append(ev.text)
                else:
                    plain = False
            for delta in shaper.deltas(events):
                if not held_logprobs and (text := shaper.text_json(delta)) is not None:
                    yield text
                    continue
                lp = logprobs_out(p.profile.tokenizer, held_logprobs) if held_logprobs else None
                held_logprobs = []
                yield shaper.chunk(delta, logprobs=lp)
        if shaper.calls and finish != "length":
            finish = "tool_calls"
        if plain:
            self._remember_reply(p, session, "".join(content))
        yield shaper.chunk(DeltaMessage(), finish_reason=finish)
        opts = p.request.stream_options
        if opts is not None and opts.include_usage:
            yield ChatCompletionChunk(
                id=p.id, created=p.created, model=p.request.model, choices=[], usage=usage_of(session.usage)
            )


class _ChunkShaper:
    """Turns parser events into chunk deltas, merging runs of the same kind."""

    def __init__(self, p: PreparedChat) -> None:
        self._p = p
        self._template = ChunkTemplate(p.id, p.created, p.request.model)
        self.calls = 0
        self._max_calls = None if p.tool_plan.parallel else 1
        self._dropped: set[int] = set()

    def chunk(
        self, delta: DeltaMessage, finish_reason: str | None = None, logprobs: ChoiceLogprobs | None = None
    ) -> ChatCompletionChunk:
        choice = ChatChunkChoice(delta=delta, finish_reason=finish_reason, logprobs=logprobs)
        return ChatCompletionChunk(
            id=self._p.id, created=self._p.created, model=self._p.request.model, choices=[choice]
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
            if self._max_calls is not None and self.calls >= self._max_calls:
                self._dropped.add(ev.index)
                return None
            self.calls += 1
            fn = ToolCallFunctionDelta(name=ev.name, arguments="")
            call = ToolCallDelta(index=ev.index, id=ev.id, type="function", function=fn)
            return DeltaMessage(tool_calls=[call])
        if isinstance(ev, ToolCallArgsDelta):
            if ev.index in self._dropped or not ev.text:
                return None
            fn = ToolCallFunctionDelta(arguments=ev.text)
            return DeltaMessage(tool_calls=[ToolCallDelta(index=ev.index, function=fn)])
        return None


def _mergeable(a: DeltaMessage, b: DeltaMessage) -> bool:
    if a.tool_calls or b.tool_calls:
        return False
    return (a.content is None) == (b.content is None) and (a.reasoning_content is None) == (b.reasoning_content is None)


def _parse_cut(p: PreparedChat, text: str) -> ParsedOutput:
    """An output cut by max_tokens, read as the stream reads it: the call it was writing stays a call with
    the arguments written so far (as OpenAI answers, and as the stream announced it), and its raw markup
    never comes back as content."""
    pipeline = p.pipeline(stream=True)
    return collect(pipeline.feed(text) + pipeline.finish(cut=True))


def _limit_calls(parsed: ParsedOutput, parallel: bool) -> list[Any]:
    return parsed.tool_calls if parallel else parsed.tool_calls[:1]
