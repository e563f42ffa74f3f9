"""Anthropic Messages renderer: the core's API-neutral events as a Message, or as Anthropic's named stream events.

Content blocks follow the output's order: a run of thinking is a `thinking` block, a run of answer text a `text`
block, each tool call a `tool_use` block. The stream opens with `message_start` (its usage counts the prompt as
prepared; `message_delta` at the end carries the final counts, the prefix cache's share included), then every
block's `content_block_start`, deltas and `content_block_stop`, then `message_delta` and `message_stop`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from mlx_router.api.errors import anthropic_error_body
from mlx_router.api.sse import NamedEvent, NamedEvents
from mlx_router.parsing.events import ContentDelta, ReasoningDelta, ToolCallArgsDelta, ToolCallStart
from mlx_router.protocol.anthropic_response import (
    MessageResponse,
    MessageUsage,
    StopReason,
    TextOut,
    ThinkingOut,
    ToolUseOut,
)
from mlx_router.serving.generation import Finished, GenerationEvent

# Anthropic's stream style: `ping` while nothing else goes out, `error` for a failure mid-stream.
ANTHROPIC_EVENTS = NamedEvents(
    error=lambda e: NamedEvent("error", anthropic_error_body(e)),
    keepalive=NamedEvent("ping", '{"type":"ping"}'),
)


def signature(thinking: str) -> str:
    """A thinking block's `signature`: clients require the field and send it back; Anthropic's is a check of
    the block that only it can verify. Here a digest of the text, which the server does not check."""
    return hashlib.sha256(thinking.encode("utf-8")).hexdigest()


def stop_reason(finished: Finished, called: bool) -> StopReason:
    if finished.reason == "length":
        return "model_context_window_exceeded" if finished.context_full else "max_tokens"
    if called or finished.reason == "tool_calls":
        return "tool_use"
    if finished.stop_sequence is not None:
        return "stop_sequence"
    return "end_turn"


def usage(finished: Finished) -> MessageUsage:
    counts = finished.usage
    return MessageUsage(
        input_tokens=counts.prompt_tokens - counts.cached_tokens,
        output_tokens=counts.completion_tokens,
        cache_read_input_tokens=counts.cached_tokens,
    )


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as the object Anthropic sends; {} for arguments that are no whole object (a call a
    max_tokens cut left unfinished; the stream sent the fragments written so far)."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class _Block:
    kind: str  # "text", "thinking" or "tool_use"
    text: list[str] = field(default_factory=list)  # text, thinking, or the call's arguments
    id: str = ""
    name: str = ""


class MessageRenderer:
    """One request's output as Anthropic's message. `model`: the name the client asked for (an alias stays
    one); `prompt_tokens`: the prompt's count as prepared, for `message_start`. Calls beyond the first without
    parallel calls are left out by the core already."""

    def __init__(self, message_id: str, model: str, prompt_tokens: int) -> None:
        self.id = message_id
        self.model = model
        self.prompt_tokens = prompt_tokens

    async def message(self, events: AsyncIterator[GenerationEvent]) -> MessageResponse:
        """The whole message, once the generation ends."""
        blocks: list[_Block] = []
        by_call: dict[int, _Block] = {}
        finished: Finished | None = None
        async for ev in events:
            if isinstance(ev, ContentDelta | ReasoningDelta) and ev.text:
                kind = "text" if isinstance(ev, ContentDelta) else "thinking"
                if not blocks or blocks[-1].kind != kind:
                    blocks.append(_Block(kind))
                blocks[-1].text.append(ev.text)
            elif isinstance(ev, ToolCallStart):
                by_call[ev.index] = _Block("tool_use", id=ev.id, name=ev.name)
                blocks.append(by_call[ev.index])
            elif isinstance(ev, ToolCallArgsDelta) and ev.index in by_call:
                by_call[ev.index].text.append(ev.text)
            elif isinstance(ev, Finished):
                finished = ev
        if finished is None:
            raise RuntimeError("the generation ended without its Finished event")
        content: list[TextOut | ThinkingOut | ToolUseOut] = []
        for b in blocks:
            text = "".join(b.text)
            if b.kind == "text":
                content.append(TextOut(text=text))
            elif b.kind == "thinking":
                content.append(ThinkingOut(thinking=text, signature=signature(text)))
            else:
                content.append(ToolUseOut(id=b.id, name=b.name, input=tool_input(text)))
        reason = stop_reason(finished, bool(by_call))
        return MessageResponse(
            id=self.id,
            content=content,
            model=self.model,
            stop_reason=reason,
            stop_sequence=finished.stop_sequence if reason == "stop_sequence" else None,
            usage=usage(finished),
        )

    async def stream(self, events: AsyncIterator[GenerationEvent]) -> AsyncIterator[NamedEvent]:
        """Anthropic's stream events, as the output comes."""
        yield self._message_start()
        out = _BlockStream()
        async for ev in events:
            if isinstance(ev, ContentDelta) and ev.text:
                for e in out.text("text", ev.text):
                    yield e
            elif isinstance(ev, ReasoningDelta) and ev.text:
                for e in out.text("thinking", ev.text):
                    yield e
            elif isinstance(ev, ToolCallStart):
                for e in out.tool_use(ev):
                    yield e
            elif isinstance(ev, ToolCallArgsDelta) and ev.index in out.call_blocks and ev.text:
                yield out.arguments(ev)
            elif isinstance(ev, Finished):
                for e in out.close():
                    yield e
                yield self._message_delta(ev, bool(out.call_blocks))
                yield NamedEvent("message_stop", '{"type":"message_stop"}')
                return
        raise RuntimeError("the generation ended without its Finished event")

    def _message_start(self) -> NamedEvent:
        message = MessageResponse(
            id=self.id,
            content=[],
            model=self.model,
            usage=MessageUsage(input_tokens=self.prompt_tokens, output_tokens=0),
        )
        return NamedEvent("message_start", {"type": "message_start", "message": message.model_dump(mode="json")})

    def _message_delta(self, finished: Finished, called: bool) -> NamedEvent:
        reason = stop_reason(finished, called)
        sequence = finished.stop_sequence if reason == "stop_sequence" else None
        data = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage(finished).model_dump(mode="json"),
        }
        return NamedEvent("message_delta", data)


class _BlockStream:
    """The stream's content blocks: which one is open, and the events that open, fill and close them."""

    def __init__(self) -> None:
        self.count = 0
        self.open: str | None = None  # the open block's kind
        self.thinking: list[str] = []
        self.call_blocks: dict[int, int] = {}

    def text(self, kind: str, text: str) -> list[NamedEvent]:
        events: list[NamedEvent] = []
        if self.open != kind:
            events.extend(self.close())
            start: dict[str, Any] = {"type": "text", "text": ""}
            if kind == "thinking":
                start = {"type": "thinking", "thinking": "", "signature": ""}
            events.append(self._start(kind, start))
        if kind == "thinking":
            self.thinking.append(text)
        # the hot path (a token each): the JSON written without building a dict
        delta = '"type":"text_delta","text":' if kind == "text" else '"type":"thinking_delta","thinking":'
        body = json.dumps(text, ensure_ascii=False)
        index = self.count - 1
        data = f'{{"type":"content_block_delta","index":{index},"delta":{{{delta}{body}}}}}'
        events.append(NamedEvent("content_block_delta", data))
        return events

    def tool_use(self, start: ToolCallStart) -> list[NamedEvent]:
        events = self.close()
        block = {"type": "tool_use", "id": start.id, "name": start.name, "input": {}}
        events.append(self._start("tool_use", block))
        self.call_blocks[start.index] = self.count - 1
        return events

    def arguments(self, delta: ToolCallArgsDelta) -> NamedEvent:
        index = self.call_blocks[delta.index]
        data = {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": delta.text},
        }
        return NamedEvent("content_block_delta", data)

    def close(self) -> list[NamedEvent]:
        if self.open is None:
            return []
        index = self.count - 1
        events = []
        if self.open == "thinking":
            sig = {"type": "signature_delta", "signature": signature("".join(self.thinking))}
            events.append(
                NamedEvent("content_block_delta", {"type": "content_block_delta", "index": index, "delta": sig})
            )
            self.thinking = []
        events.append(NamedEvent("content_block_stop", {"type": "content_block_stop", "index": index}))
        self.open = None
        return events

    def _start(self, kind: str, block: dict[str, Any]) -> NamedEvent:
        self.open = kind
        self.count += 1
        data = {"type": "content_block_start", "index": self.count - 1, "content_block": block}
        return NamedEvent("content_block_start", data)
