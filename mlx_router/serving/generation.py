"""One service for every API: a prepared conversation run into API-neutral events.

The events are the output parsers' (`parsing/events.py`: content, reasoning, tool-call start and argument
fragments), the token logprobs, and one last `Finished` with the reason and the token counts. Each API's renderer
(`serving/chat.py`, `serving/anthropic.py`, `serving/responses.py`) turns them into its responses and its stream
events; nothing here knows any API's shapes.

Streamed, events come as the tokens do; otherwise all of them come at the end from the whole output parsed at
once. What every API wants alike is done here: without `parallel_tool_calls` only the first call is kept; a call to
a custom tool carries its raw input, not the JSON object the template asked the model to write; a reply given as
plain content is remembered with the ids the model generated (`reuse_reply_tokens`), so the next turn, which sends
it back as text, hits the prefix cache to its end.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Union

from mlx_router.config.settings import Settings
from mlx_router.conversation.normalize import CUSTOM_INPUT
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
from mlx_router.serving.prepare import PreparedGeneration
from mlx_router.serving.session import GenerationSession, UsageCounts

FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class LogprobsDelta:
    """The logprobs of the tokens behind the events that follow it."""

    items: list[TokenLogprob]


@dataclass(frozen=True)
class Finished:
    """The last event: why the output ended and what it cost."""

    reason: FinishReason
    usage: UsageCounts
    stop_sequence: str | None = None  # the request's stop string that ended it
    context_full: bool = False  # ended at the length limit because the model's context is full


GenerationEvent = Union[OutputEvent, LogprobsDelta, Finished]  # noqa: UP007 (a runtime alias)


class GenerationService:
    """Runs prepared conversations through the engine."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._settings = settings
        self._engine = engine

    def session(self, p: PreparedGeneration) -> GenerationSession:
        """The request's session: opening it admits the request (429/503 before any byte is sent)."""
        d = self._settings.defaults
        return GenerationSession(
            self._engine, p.generation, p.profile.tokenizer, p.stops, d.timeout, d.stream_chunk_size
        )

    async def events(
        self, p: PreparedGeneration, session: GenerationSession, *, stream: bool
    ) -> AsyncIterator[GenerationEvent]:
        calls = _CallFilter(p)
        if stream:
            async for event in self._streamed(p, session, calls):
                yield event
        else:
            for event in await self._whole(p, session, calls):
                yield event

    async def _streamed(
        self, p: PreparedGeneration, session: GenerationSession, calls: _CallFilter
    ) -> AsyncIterator[GenerationEvent]:
        pipeline = p.pipeline(stream=True)
        finish = "stop"
        content: list[str] = []
        plain = True  # the output is content alone, no reasoning and no calls
        async for chunk in session.chunks():
            if chunk.logprobs:
                yield LogprobsDelta(chunk.logprobs)
            events = pipeline.feed(chunk.text) if chunk.text else []
            if chunk.finish_reason is not None:
                events += pipeline.finish(cut=chunk.finish_reason == "length")
                finish = chunk.finish_reason
            for event in calls.filter(events, last=chunk.finish_reason is not None):
                if isinstance(event, ContentDelta):
                    content.append(event.text)
                else:
                    plain = False
                yield event
        if plain:
            self._remember_reply(p, session, "".join(content))
        yield self._finished(p, session, finish, calls.count)

    async def _whole(self, p: PreparedGeneration, session: GenerationSession, calls: _CallFilter) -> list:
        finish = "stop"
        logprobs: list[TokenLogprob] = []
        async for chunk in session.chunks():
            logprobs.extend(chunk.logprobs)
            finish = chunk.finish_reason or finish
        parsed = _parse_cut(p, session.text) if finish == "length" else p.pipeline().parse(session.text)
        events: list[GenerationEvent] = [LogprobsDelta(logprobs)] if logprobs else []
        events += calls.filter(_as_events(parsed), last=True)
        if not parsed.tool_calls and not parsed.reasoning:
            self._remember_reply(p, session, parsed.content or "")
        events.append(self._finished(p, session, finish, calls.count))
        return events

    @staticmethod
    def _finished(p: PreparedGeneration, session: GenerationSession, finish: str, calls: int) -> Finished:
        usage = session.usage
        context = p.profile.context_tokens
        if finish == "length":
            full = context is not None and usage.prompt_tokens + usage.completion_tokens >= context
            return Finished("length", usage, context_full=full)
        reason: FinishReason = "tool_calls" if calls else "stop"  # a cut output says so, even after complete calls
        return Finished(reason, usage, stop_sequence=session.stop_sequence)

    def _remember_reply(self, p: PreparedGeneration, session: GenerationSession, content: str) -> None:
        """A reply the client gets as plain content, all of its tokens: the next turn, which sends it back,
        encodes it as the ids the model generated (`PromptEncoder.remember_reply`), so the prefix cache holds
        it to its end."""
        if self._settings.defaults.reuse_reply_tokens and session.whole and content == session.text:
            p.profile.prompts.remember_reply(p.prompt_text, session.token_ids, content)


class _CallFilter:
    """Keeps the first call only without parallel calls, and turns a custom tool's `{"input": ...}` arguments
    into its raw input (held until the call is complete: the JSON string cannot be unwrapped before)."""

    def __init__(self, p: PreparedGeneration) -> None:
        self._max = None if p.tool_plan.parallel else 1
        self._custom = {n for n in (t["function"]["name"] for t in p.tool_plan.tools) if p.conversation.custom_tool(n)}
        self._dropped: set[int] = set()
        self._held: dict[int, list[str]] = {}  # a custom call's argument fragments, by call index
        self.count = 0

    def filter(self, events: list[OutputEvent], *, last: bool) -> list[OutputEvent]:
        out: list[OutputEvent] = []
        for ev in events:
            if isinstance(ev, ToolCallStart):
                out += self._release()  # the call before it is complete
                if self._max is not None and self.count >= self._max:
                    self._dropped.add(ev.index)
                    continue
                self.count += 1
                if ev.name in self._custom:
                    self._held[ev.index] = []
                out.append(ev)
            elif isinstance(ev, ToolCallArgsDelta):
                if ev.index in self._dropped:
                    continue
                if ev.index in self._held:
                    self._held[ev.index].append(ev.text)
                    continue
                out.append(ev)
            else:
                out.append(ev)
        if last:
            out += self._release()
        return out

    def _release(self) -> list[OutputEvent]:
        out: list[OutputEvent] = [ToolCallArgsDelta(i, _raw_input("".join(parts))) for i, parts in self._held.items()]
        self._held.clear()
        return out


def _raw_input(arguments: str) -> str:
    """A custom tool's input from the arguments the model wrote (`{"input": "..."}`); text that is not such an
    object (a model that wrote the input bare) is the input itself. Arguments cut by the output limit give the
    part of the input written before the cut, never the JSON around it."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return _cut_input(arguments)
    if isinstance(value, dict) and isinstance(value.get(CUSTOM_INPUT), str):
        return value[CUSTOM_INPUT]
    return arguments


_CUT_INPUT = re.compile(r'\s*\{\s*"' + CUSTOM_INPUT + r'"\s*:\s*"((?:[^"\\]|\\.)*)(\\[^"]*)?$', re.S)


def _cut_input(arguments: str) -> str:
    """The decoded input of `{"input": "...` cut before its string closed (an escape cut in half is dropped)."""
    if ('{"' + CUSTOM_INPUT + '":"').startswith(re.sub(r"\s", "", arguments)):  # cut before the input began
        return ""
    match = _CUT_INPUT.match(arguments)
    if match is None:
        return arguments
    body = re.sub(r"\\u[0-9a-fA-F]{0,3}$", "", match.group(1))  # a \uXXXX escape cut in half
    try:
        return str(json.loads('"' + body + '"'))
    except ValueError:
        return arguments


def _as_events(parsed: ParsedOutput) -> list[OutputEvent]:
    events: list[OutputEvent] = []
    if parsed.reasoning:
        events.append(ReasoningDelta(parsed.reasoning))
    if parsed.content:
        events.append(ContentDelta(parsed.content))
    for index, call in enumerate(parsed.tool_calls):
        events += [ToolCallStart(index, call.id, call.name), ToolCallArgsDelta(index, call.arguments)]
    return events


def _parse_cut(p: PreparedGeneration, text: str) -> ParsedOutput:
    """An output cut by max_tokens, read as the stream reads it: the call it was writing stays a call with
    the arguments written so far (as OpenAI answers, and as the stream announced it), and its raw markup
    never comes back as content."""
    pipeline = p.pipeline(stream=True)
    return collect(pipeline.feed(text) + pipeline.finish(cut=True))
