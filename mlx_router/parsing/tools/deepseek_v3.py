"""DeepSeek V3 / R1 and V3.1 calls (the bars and spaces are the full-width `｜` and `▁` characters).

- V3, R1: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{...}\\n```
  <｜tool▁call▁end｜>` (more calls) `<｜tool▁calls▁end｜>`
- V3.1: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`
  (more calls) `<｜tool▁calls▁end｜>`
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from mlx_router.parsing.tools.base import ToolChoiceMode
from mlx_router.parsing.tools.grammar import (
    Markup,
    free_text_terminal,
    functions,
    json_rule,
    lark_string,
    repeated,
    start_rule,
)
from mlx_router.parsing.tools.scanning import (
    Scan,
    Segment,
    TextRun,
    call,
    content,
    held_suffix,
    json_end,
    json_prefix,
    marker_pattern,
    object_arguments,
    read_gap,
    read_text,
    skip_space,
)
from mlx_router.parsing.tools.streaming import StreamingToolParser

CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
_OPENER = marker_pattern([CALLS_BEGIN, CALL_BEGIN])
_V3_HEAD = re.compile(r"\s*function\s*<｜tool▁sep｜>([^\n]+)\n\s*```(?:json)?\s*")
_V31_HEAD = re.compile(r"\s*([^<\n]+?)\s*<｜tool▁sep｜>\s*")
_FENCE_END = re.compile(r"\s*(?:```)?\s*$")
_CALL_GAP = '"\\n"?'  # Lark: DeepSeek's templates (and so its models) put a line break between two calls


class DeepSeekV3ToolParser(StreamingToolParser):
    """Calls inside a `<｜tool▁calls▁begin｜>` block, in the V3/R1 or the V3.1 layout."""

    name = "deepseek_v3"
    call_openers = (CALLS_BEGIN, CALL_BEGIN)
    markers = (CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP)

    @classmethod
    def detect(cls, chat_template: str | None, vocab: Collection[str]) -> bool:
        """DeepSeek V3-family tokenizers and templates carry the `<｜tool▁calls▁begin｜>` token."""
        return CALLS_BEGIN in vocab or CALLS_BEGIN in (chat_template or "")

    def _initial_state(self) -> tuple[str, bool]:
        # ("text", "gap" just after a calls block, or "block" inside one; some content was sent)
        return "text", False

    def _scan(self, text: str, state: Any, final: bool) -> Scan:
        scan = Scan()
        (state, seen), pos = state, 0

        def run_at(start: int) -> TextRun:
            return read_text(text, start, _OPENER, [CALLS_BEGIN, CALL_BEGIN], final)

        while True:
            if state == "block":
                pos = skip_space(text, pos)
                if text.startswith(CALLS_END, pos):
                    pos, state = pos + len(CALLS_END), "gap"
                    continue
                if not text.startswith(CALL_BEGIN, pos):
                    if not final and held_suffix(text, [CALL_BEGIN, CALLS_END], pos) == len(text) - pos:
                        break  # nothing, or the start of a marker
                    state = "text"  # stray text inside the block is plain text
                    continue
                stop = self._call(text, pos, final, scan)
                if stop is None:
                    break
                pos = stop
                continue
            run = read_gap(text, pos, run_at, final, seen) if state == "gap" else run_at(pos)
            if run.text:
                scan.segments.append(content(run.text))
                state, seen = "text", True
            pos = run.end
            if run.opener is None:
                break
            if run.opener.group() == CALLS_BEGIN:
                pos += len(CALLS_BEGIN)
            state = "block"
        scan.commit, scan.state = pos, (state, seen)
        return scan

    def _call(self, text: str, pos: int, final: bool, scan: Scan) -> int | None:
        """Read one `<｜tool▁call▁begin｜>...<｜tool▁call▁end｜>` at pos: its end, or None while pending."""
        body_start = pos + len(CALL_BEGIN)
        close = text.find(CALL_END, body_start)
        if close < 0 and not final:
            scan.pending = self._partial(text, pos, body_start)
            return None
        end = len(text) if close < 0 else close + len(CALL_END)
        body = text[body_start : close if close >= 0 else end]
        scan.segments.append(self._segment(text[pos:end], body))
        return end

    def _partial(self, text: str, pos: int, body_start: int) -> Segment:
        """An unfinished call: its name and arguments so far (eager streaming only reads them)."""
        body = text[body_start:]
        head = _V3_HEAD.match(body)
        if not self.eager or (head is None and body.lstrip().startswith("function")):
            return call(text[pos:], None, None)  # (V3: the name line is not finished yet)
        head = head or _V31_HEAD.match(body)
        if head is None:
            return call(text[pos:], None, None)
        start = body_start + head.end()
        args = json_prefix(text, start, len(text), self.json_memo) if text[start : start + 1] == "{" else None
        return call(text[pos:], head.group(1).strip(), args)

    @staticmethod
    def _segment(raw: str, body: str) -> Segment:
        head = _V3_HEAD.match(body) or _V31_HEAD.match(body)
        if head is None:
            return call(raw, None, None, "no <｜tool▁sep｜> after a name")
        name, start = head.group(1).strip(), head.end()
        end = json_end(body, start) if body[start : start + 1] == "{" else None
        if end is None or not _FENCE_END.match(body, end):
            return call(raw, name, None, "arguments are not one JSON object")
        args = object_arguments(body[start:end])
        return call(raw, name, args, None if args is not None else "arguments are not a JSON object")

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
        """A calls block, each call in the V3 (fenced) or the V3.1 (bare JSON) layout: the model picks."""
        markup = Markup(special_tokens, self.markers)
        options = []
        for name, schema in functions(tools):
            arguments = json_rule(schema)
            fenced = lark_string(name + "\n```json\n")
            v3 = f'"function" {markup(SEP)} {fenced} {arguments} "\\n```"'
            v31 = f"{lark_string(name)} {markup(SEP)} {arguments}"
            options += [f"({v3})", f"({v31})"]
        lines = [
            f"call: {markup(CALL_BEGIN)} ({' | '.join(options)}) {markup(CALL_END)}",
            f"calls: {markup(CALLS_BEGIN)} {repeated('call', parallel, _CALL_GAP)} {markup(CALLS_END)}",
        ]
        if mode == "auto":
            lines += [
                *start_rule("TEXT | TEXT? calls", markup, think, in_reasoning, think_budget),
                free_text_terminal("TEXT", CALLS_BEGIN, markup),
            ]
        else:
            lines += start_rule("calls", markup, think, in_reasoning, think_budget)
        return "\n".join(lines) + "\n"
