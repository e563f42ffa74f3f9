"""The path of one generation's text: reasoning parser first, then the tool parser on what is content."""

from __future__ import annotations

from mlx_router.parsing.events import (
    ContentDelta,
    OutputEvent,
    ParsedOutput,
    ReasoningDelta,
    merge_deltas,
)
from mlx_router.parsing.reasoning.base import ReasoningParser
from mlx_router.parsing.tools.base import ToolCallParser


class OutputPipeline:
    """Turns one generation's text into events (streaming) or a ParsedOutput (whole text).

    Text goes through `reasoning` (if any); its content goes through `tools` (if any). A tool parser that
    handles reasoning itself (harmony) gets the raw text and the reasoning parser is not used. Both parsers
    are single-use: build one pipeline per generation.
    """

    def __init__(self, reasoning: ReasoningParser | None, tools: ToolCallParser | None) -> None:
        self.tools = tools
        self.reasoning = None if tools is not None and tools.handles_reasoning else reasoning
        if self.reasoning is not None and tools is not None:
            self.reasoning.implicit_ends = tools.call_openers

    def feed(self, text: str) -> list[OutputEvent]:
        """Consume the next decoded text delta; adjacent deltas of one kind come back merged."""
        if self.reasoning is None:
            return self._route([ContentDelta(text)]) if text else []
        return self._route(self.reasoning.feed(text))

    def finish(self, *, cut: bool = False) -> list[OutputEvent]:
        """The output ended (`cut`: at max_tokens, see ToolCallParser.finish): flush both parsers."""
        events = self._route(self.reasoning.finish()) if self.reasoning is not None else []
        if self.tools is not None:
            events = merge_deltas(events + self.tools.finish(cut=cut))
        return events

    def parse(self, text: str) -> ParsedOutput:
        """Split a whole output into reasoning, content and tool calls."""
        reasoning: str | None = None
        content: str | None = text
        if self.reasoning is not None:
            reasoning, content = self.reasoning.parse(text)
        if self.tools is None:
            return ParsedOutput(content=content or None, reasoning=reasoning)
        parsed = self.tools.parse(content or "")
        if reasoning is not None:
            parsed.reasoning = reasoning + (parsed.reasoning or "")
        return parsed

    def _route(self, events: list[ContentDelta | ReasoningDelta]) -> list[OutputEvent]:
        """Pass reasoning through and send content through the tool parser, keeping the order."""
        routed: list[OutputEvent] = []
        for event in events:
            if isinstance(event, ContentDelta) and self.tools is not None:
                routed.extend(self.tools.feed(event.text))
            else:
                routed.append(event)
        return merge_deltas(routed)
