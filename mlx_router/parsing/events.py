"""What a parser yields while it reads a model's output, token by token.

A streaming parser turns text deltas into a list of these events; the serving layer turns them into OpenAI
chunks (`delta.content`, `delta.reasoning_content`, `delta.tool_calls`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class ContentDelta:
    """Visible answer text."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """Thinking text, sent as `reasoning_content`."""

    text: str


@dataclass(frozen=True)
class ToolCallStart:
    """A new tool call whose name is known: `index` counts calls in this turn from 0."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallArgsDelta:
    """A fragment of a tool call's arguments (JSON text); a call's fragments concatenate to its arguments."""

    index: int
    text: str


OutputEvent = Union[ContentDelta, ReasoningDelta, ToolCallStart, ToolCallArgsDelta]  # noqa: UP007 (a runtime alias)


@dataclass
class ToolCall:
    """A complete tool call: `arguments` is a JSON object serialized as a string, as OpenAI sends it."""

    id: str
    name: str
    arguments: str


@dataclass
class ParsedOutput:
    """A whole output split into its parts."""

    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


def merge_deltas(events: list[OutputEvent]) -> list[OutputEvent]:
    """Join neighbouring deltas of one kind (and one call) so a feed() yields as few events as possible."""
    merged: list[OutputEvent] = []
    for event in events:
        last = merged[-1] if merged else None
        if isinstance(event, (ContentDelta, ReasoningDelta)) and type(last) is type(event):
            merged[-1] = type(event)(last.text + event.text)
        elif isinstance(event, ToolCallArgsDelta) and isinstance(last, ToolCallArgsDelta) and last.index == event.index:
            merged[-1] = ToolCallArgsDelta(event.index, last.text + event.text)
        else:
            merged.append(event)
    return merged


def collect(events: list[OutputEvent]) -> ParsedOutput:
    """Fold a whole stream of events into the `ParsedOutput` a non-streaming response carries."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, ToolCall] = {}
    for event in events:
        if isinstance(event, ContentDelta):
            content.append(event.text)
        elif isinstance(event, ReasoningDelta):
            reasoning.append(event.text)
        elif isinstance(event, ToolCallStart):
            calls[event.index] = ToolCall(event.id, event.name, "")
        elif event.index in calls:
            calls[event.index].arguments += event.text
    return ParsedOutput(
        content="".join(content) or None,
        reasoning="".join(reasoning) or None,
        tool_calls=[calls[i] for i in sorted(calls)],
    )
