"""Qwen 2.5/3 and NousResearch Hermes: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from mlx_router.parsing.tools.base import ToolChoiceMode
from mlx_router.parsing.tools.grammar import (
    Markup,
    any_call_object,
    free_text_terminal,
    json_rule,
    repeated,
    start_rule,
)
from mlx_router.parsing.tools.scanning import (
    Scan,
    Segment,
    TextRun,
    call,
    call_from_object,
    content,
    marker_pattern,
    partial_call_object,
    read_gap,
    read_text,
    skip_space,
)
from mlx_router.parsing.tools.streaming import StreamingToolParser

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_OPENER = marker_pattern([OPEN])
_ARGS_KEYS = ("arguments", "parameters")


class HermesToolParser(StreamingToolParser):
    """JSON calls wrapped in `<tool_call>` tags, one block per call; a block cut off by EOS still counts."""

    name = "hermes"
    call_openers = (OPEN,)
    markers = (OPEN, CLOSE)

    @classmethod
    def detect(cls, chat_template: str | None, vocab: Collection[str]) -> bool:
        """Qwen/Hermes templates show the `<tool_call>` block; their tokenizers have it as a token."""
        return OPEN in (chat_template or "") or (OPEN in vocab and CLOSE in vocab)

    def _initial_state(self) -> tuple[bool, bool]:
        return False, False  # (in the gap after a call, some content was sent)

    def _scan(self, text: str, state: Any, final: bool) -> Scan:
        scan = Scan()
        (gap, seen), pos = state, 0

        def run_at(start: int) -> TextRun:
            return read_text(text, start, _OPENER, [OPEN], final)

        while True:
            run = read_gap(text, pos, run_at, final, seen) if gap else run_at(pos)
            if run.text:
                scan.segments.append(content(run.text))
                gap, seen = False, True
            pos = run.end
            if run.opener is None:
                break
            close = text.find(CLOSE, pos + len(OPEN))
            if close < 0 and not final:
                scan.pending = self._partial(text, pos)
                break
            end = len(text) if close < 0 else close + len(CLOSE)
            body_end = len(text) if close < 0 else close
            scan.segments.append(self._block(text[pos:end], text[pos + len(OPEN) : body_end]))
            pos, gap = end, True
        scan.commit, scan.state = pos, (gap, seen)
        return scan

    @staticmethod
    def _block(raw: str, body: str) -> Segment:
        name, args, error = call_from_object(body.strip(), _ARGS_KEYS, required=False)
        return call(raw, name, args, error)

    def _partial(self, text: str, pos: int) -> Segment:
        if not self.eager:  # only eager streaming reads an unfinished call
            return call(text[pos:], None, None)
        start = skip_space(text, pos + len(OPEN))
        name, args = partial_call_object(text, start, _ARGS_KEYS, self.json_memo)
        return call(text[pos:], name, args)

    def grammar(
        self,
        tools: list[dict[str, Any]],
        *,
        mode: ToolChoiceMode,
        parallel: bool,
        special_tokens: Mapping[str, int] | None = None,
        think: tuple[str, str] | None = None,
        in_reasoning: bool = False,
        think_budget: int | None = None,
    ) -> str:
        """`<tool_call>\\n{json}\\n</tool_call>` blocks, one per line; the JSON follows the tool's schema."""
        markup = Markup(special_tokens, self.markers)
        lines = [
            f'call: {markup(OPEN)} "\\n" body "\\n" {markup(CLOSE)}',
            f"body: {json_rule(any_call_object(tools, 'arguments'))}",
            "calls: " + repeated("call", parallel, '"\\n"'),
        ]
        if mode == "auto":
            lines += [
                *start_rule("TEXT | TEXT? calls", markup, think, in_reasoning, think_budget),
                free_text_terminal("TEXT", OPEN, markup),
            ]
        else:
            lines += start_rule("calls", markup, think, in_reasoning, think_budget)
        return "\n".join(lines) + "\n"
