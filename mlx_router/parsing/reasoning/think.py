"""`<think>...</think>` reasoning (Qwen3, QwQ, DeepSeek-R1 and their distills).

The block opens at the start of the output, or in the prompt (`in_reasoning=True`: templates that end the
generation prompt with `<think>\\n`, so the output is `...</think>answer`). A block never closed holds the
whole output. Whitespace around the thinking and the blank lines after `</think>` are dropped, so neither
`reasoning_content` nor `content` starts or ends with them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import ClassVar

from mlx_router.parsing.events import ContentDelta, ReasoningDelta
from mlx_router.parsing.reasoning.base import ReasoningParser
from mlx_router.parsing.tools.scanning import held_suffix

OPEN, CLOSE = "<think>", "</think>"


class ThinkReasoningParser(ReasoningParser):
    """Reasoning inside `<think>` tags; streamed as it is written, holding back only a possible `</think>`."""

    name = "think"
    markers: ClassVar[tuple[str, str]] = (OPEN, CLOSE)
    """(open, close) tags, for grammars that must let the model think first."""

    def __init__(self, *, in_reasoning: bool = False) -> None:
        super().__init__(in_reasoning=in_reasoning)
        # "start": may open <think>; "opened": inside, before any thinking text; "reasoning";
        # "closed": after </think>, before any answer text; "content"
        self._mode = "opened" if in_reasoning else "start"
        self._buffer = ""

    @classmethod
    def detect(cls, chat_template: str | None, vocab: Collection[str]) -> bool:
        """Thinking models have `<think>`/`</think>` tokens and mention them in their templates."""
        return (OPEN in vocab and CLOSE in vocab) or CLOSE in (chat_template or "")

    @classmethod
    def prompt_opens_reasoning(cls, prompt_text: str) -> bool:
        """True when the prompt ends inside an open `<think>` (only whitespace after the last one)."""
        opened = prompt_text.rfind(OPEN)
        return opened > prompt_text.rfind(CLOSE) and not prompt_text[opened + len(OPEN) :].strip()

    @classmethod
    def prompt_closes_reasoning(cls, prompt_text: str) -> bool:
        """True when the prompt ends with `</think>` (and whitespace): thinking is over before the output."""
        return prompt_text.rstrip().endswith(CLOSE)

    def feed(self, text: str) -> list[ContentDelta | ReasoningDelta]:
        """Consume the next decoded text delta."""
        self._buffer += text
        return self._advance(final=False)

    def finish(self) -> list[ContentDelta | ReasoningDelta]:
        """Flush what is held back at the end of the output."""
        return self._advance(final=True)

    def parse(self, text: str) -> tuple[str | None, str]:
        """(reasoning or None, content) of a whole output: the stream's rules in one final pass."""
        fresh = type(self)(in_reasoning=self.in_reasoning)
        fresh.implicit_ends = self.implicit_ends
        fresh._buffer = text
        events = fresh._advance(final=True)
        reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
        return reasoning or None, "".join(e.text for e in events if isinstance(e, ContentDelta))

    def _advance(self, final: bool) -> list[ContentDelta | ReasoningDelta]:
        events: list[ContentDelta | ReasoningDelta] = []
        while self._buffer and self._step(final, events):
            pass
        return events

    def _step(self, final: bool, events: list[ContentDelta | ReasoningDelta]) -> bool:
        """Handle the buffer in the current mode; False when nothing more can be decided now."""
        text = self._buffer
        if self._mode in ("start", "opened"):
            stripped = text.lstrip()
            if stripped.startswith(OPEN):  # the block opens here (or is opened twice: prompt and output)
                self._buffer, self._mode = stripped[len(OPEN) :], "opened"
                return True
            if not final and OPEN.startswith(stripped):
                return False
            self._mode = "reasoning" if self._mode == "opened" else "content"
            self._buffer = stripped
            return True
        if self._mode == "closed":
            self._buffer = text.lstrip()
            self._mode = "content" if self._buffer else "closed"
            return bool(self._buffer)
        if self._mode == "content":
            events.append(ContentDelta(text))
            self._buffer = ""
            return False
        return self._reason(text, final, events)

    def _reason(self, text: str, final: bool, events: list[ContentDelta | ReasoningDelta]) -> bool:
        ends = [(text.find(m), m) for m in (CLOSE, *self.implicit_ends) if m and m in text]
        if ends:
            at, marker = min(ends)
            thinking = text[:at].rstrip()
            if marker == CLOSE:
                self._buffer, self._mode = text[at + len(CLOSE) :], "closed"
            else:  # a tool call opened inside the thinking: it belongs to the content
                self._buffer, self._mode = text[at:], "content"
        elif final:
            thinking, self._buffer = text.rstrip(), ""
        else:
            # hold a possible "</thi" and the whitespace before it (dropped if the block closes right after)
            held = held_suffix(text, [CLOSE, *self.implicit_ends])
            body = text[: len(text) - held]
            keep = held + len(body) - len(body.rstrip())
            thinking, self._buffer = text[: len(text) - keep], text[len(text) - keep :]
            if thinking:
                events.append(ReasoningDelta(thinking))
            return False
        if thinking:
            events.append(ReasoningDelta(thinking))
        return True
