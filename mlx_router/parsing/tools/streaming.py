"""One streaming engine for every tool-call format: formats only write a scanner.

`feed` appends text and scans what is not committed yet; `finish` scans it once more as the end of output;
`parse` runs the same scanner over a whole text in one final scan. Both paths turn segments into events with
the same code, so streamed and non-streamed answers agree.

When a call's arguments are known: by default (`eager=False`) a call is sent (ToolCallStart, then its
arguments) once its markup is complete and it checked out against the tools; a call that fails is given back
as content. With `eager=True` ToolCallStart goes out as soon as the name is read and names a known tool, and
the arguments stream as they are written; a call that then fails its checks cannot be taken back, so it stays
a call (and `parse` would have given it back as content instead).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from mlx_router.parsing.events import (
    ContentDelta,
    OutputEvent,
    ParsedOutput,
    ReasoningDelta,
    ToolCallArgsDelta,
    ToolCallStart,
    collect,
    merge_deltas,
)
from mlx_router.parsing.tools.base import ToolCallParser, new_call_id
from mlx_router.parsing.tools.scanning import JsonMemo, Scan, Segment
from mlx_router.parsing.tools.specs import ToolSpecs


@dataclass
class _OpenCall:
    """A call already announced in eager mode: its index and the arguments text sent so far."""

    index: int
    sent: str = ""


class StreamingToolParser(ToolCallParser):
    """A ToolCallParser whose format is described by `_scan` (see `scanning.Scan` for the contract)."""

    def __init__(self, tools: list[dict[str, Any]] | None = None, *, eager: bool = False) -> None:
        super().__init__(tools, eager=eager)
        self.specs = ToolSpecs(self.tools)
        self._buffer = ""
        self._state: Any = self._initial_state()
        self._calls = 0
        self._open: _OpenCall | None = None
        self.json_memo: JsonMemo = {}
        """Resume points of JSON scans, keyed by offsets in the uncommitted text (valid until it moves)."""

    def _initial_state(self) -> Any:
        """The scanner state at the start of an output."""
        return None

    @abstractmethod
    def _scan(self, text: str, state: Any, final: bool) -> Scan:
        """Split `text` (everything not committed yet, starting in `state`) into segments.

        Not final: commit only what cannot change with more text; an unfinished call goes into `pending`
        (starting at the commit point) and a tail that may become markup stays uncommitted. Final: commit all.
        """

    def feed(self, text: str) -> list[OutputEvent]:
        """Consume the next decoded text delta."""
        self._buffer += text
        return self._advance(final=False)

    def finish(self, *, cut: bool = False) -> list[OutputEvent]:
        """The output ended: settle the held-back tail and any unfinished call (see ToolCallParser.finish)."""
        if not cut:
            return self._advance(final=True)
        events = self._advance(final=False)  # commits all that is certain; an open call keeps streaming
        self._buffer = ""  # what is left: an unfinished call or a few held-back characters of one
        return events

    def parse(self, text: str) -> ParsedOutput:
        """Split a whole output: the same scanner and checks as the stream, in one final scan."""
        return collect(self.parse_events(text))

    def parse_events(self, text: str) -> list[OutputEvent]:
        """The events of a whole output, from one final scan by a fresh parser with the same tools."""
        fresh = type(self)(self.tools)
        fresh.specs = self.specs
        fresh._buffer = text
        return fresh._advance(final=True)

    def _advance(self, final: bool) -> list[OutputEvent]:
        scan = self._scan(self._buffer, self._state, final)
        events: list[OutputEvent] = []
        for segment in scan.segments:
            events.extend(self._settle(segment))
        self._buffer = self._buffer[scan.commit :]
        self._state = scan.state
        if scan.commit:
            self.json_memo.clear()
        if scan.pending is not None and self.eager:
            events.extend(self._progress(scan.pending))
        return merge_deltas(events)

    def _settle(self, segment: Segment) -> list[OutputEvent]:
        """Events for a finished segment."""
        if segment.kind == "content":
            return [ContentDelta(segment.text)] if segment.text else []
        if segment.kind == "reasoning":
            return [ReasoningDelta(segment.text)] if segment.text else []
        opened, self._open = self._open, None
        error = segment.error or self.specs.check(segment.name, segment.args)
        if opened is not None:  # eager: announced already; send the rest of its arguments if any
            rest = (segment.args or "")[len(opened.sent) :] if error is None else ""
            return [ToolCallArgsDelta(opened.index, rest)] if rest else []
        if error is not None:
            return [ContentDelta(segment.text)] if segment.text else []
        index = self._next_index()
        return [
            ToolCallStart(index, new_call_id(), segment.name or ""),
            ToolCallArgsDelta(index, segment.args or ""),
        ]

    def _progress(self, pending: Segment) -> list[OutputEvent]:
        """Eager mode: announce a pending call once its name is known, then stream its arguments."""
        events: list[OutputEvent] = []
        if self._open is None:
            if not self.specs.known(pending.name):
                return events
            self._open = _OpenCall(self._next_index())
            events.append(ToolCallStart(self._open.index, new_call_id(), pending.name or ""))
        args = pending.args or ""
        if len(args) > len(self._open.sent) and args.startswith(self._open.sent):
            events.append(ToolCallArgsDelta(self._open.index, args[len(self._open.sent) :]))
            self._open.sent = args
        return events

    def _next_index(self) -> int:
        self._calls += 1
        return self._calls - 1
