"""Llama 3.1/3.2/3.3 JSON calls: `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>`.

Several calls are separated by `;` or newlines. A call is recognized wherever a JSON object starts with a
`"name"` key; one that turns out not to be a call (no parameters, bad JSON) is given back as text.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from mlx_router.parsing.tools.base import ToolChoiceMode
from mlx_router.parsing.tools.grammar import Markup, any_call_object, json_rule, repeated, start_rule
from mlx_router.parsing.tools.scanning import (
    Scan,
    Segment,
    TextRun,
    call,
    call_from_object,
    content,
    held_suffix,
    json_end,
    partial_call_object,
    read_gap,
    skip_space,
)
from mlx_router.parsing.tools.streaming import StreamingToolParser

PYTHON_TAG = "<|python_tag|>"
_OPENER = re.compile(r'<\|python_tag\|>|\{\s*"name"\s*:')
_OPEN_PREFIX = re.compile(r'\{\s*(?:"(?:n(?:a(?:m(?:e(?:"\s*)?)?)?)?)?)?$')
_ARGS_KEYS = ("parameters", "arguments")


def _read_text(text: str, pos: int, final: bool) -> TextRun:
    """Content up to the next call opener; a tail like `{ "na` or `<|pyth` waits until it is decided."""
    match = _OPENER.search(text, pos)
    if match is not None:
        return TextRun(text[pos : match.start()], match.start(), match)
    end = len(text)
    if not final:
        brace = text.rfind("{", pos)
        if brace >= 0 and _OPEN_PREFIX.match(text, brace):
            end = brace
        end = min(end, len(text) - held_suffix(text, [PYTHON_TAG], pos))
    return TextRun(text[pos:end], end, None)


class Llama3JsonToolParser(StreamingToolParser):
    """Meta Llama 3.x custom-tool calls in JSON (`parameters` holds the arguments; `arguments` works too)."""

    name = "llama3_json"
    call_openers = (PYTHON_TAG,)
    markers = (PYTHON_TAG,)

    @classmethod
    def detect(cls, chat_template: str | None, vocab: Collection[str]) -> bool:
        """Llama 3.1+ templates ask for `{"name": ..., "parameters": ...}`; tokenizers: `<|python_tag|>`."""
        template = chat_template or ""
        return PYTHON_TAG in vocab or PYTHON_TAG in template or '"parameters": dictionary of argument' in template

    def _initial_state(self) -> tuple[bool, bool]:
        return False, False  # (in the gap after a call, where ';' separates calls; some content was sent)

    def _scan(self, text: str, state: Any, final: bool) -> Scan:
        scan = Scan()
        (gap, seen), pos = state, 0

        def run_at(start: int) -> TextRun:
            return _read_text(text, start, final)

        while True:
            run = read_gap(text, pos, run_at, final, seen, ";") if gap else run_at(pos)
            if run.text:
                scan.segments.append(content(run.text))
                gap, seen = False, True
            pos = run.end
            if run.opener is None:
                break
            start = pos
            if run.opener.group() == PYTHON_TAG:
                start = skip_space(text, pos + len(PYTHON_TAG))
                if start == len(text) and not final:
                    scan.pending = call(text[pos:], None, None)
                    break
                if start == len(text) or text[start] != "{":  # built-in tool syntax: not ours, keep as text
                    scan.segments.append(content(text[pos:start]))
                    pos, gap, seen = start, False, True
                    continue
            end = json_end(text, start, self.json_memo)
            if end is None and not final:
                scan.pending = self._partial(text, pos, start)
                break
            end = len(text) if end is None else end
            scan.segments.append(self._call(text[pos:end], text[start:end]))
            pos, gap = end, True
        scan.commit, scan.state = pos, (gap, seen)
        return scan

    @staticmethod
    def _call(raw: str, body: str) -> Segment:
        name, args, error = call_from_object(body, _ARGS_KEYS, required=True)
        return call(raw, name, args, error)

    def _partial(self, text: str, pos: int, start: int) -> Segment:
        name, args = partial_call_object(text, start, _ARGS_KEYS, self.json_memo) if self.eager else (None, None)
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
        """One JSON call object per call, `; `-separated; in auto mode text that does not start with `{`.

        Llama's templates ask for bare JSON for custom tools, but Llama 3.1 may also open the calls with
        `<|python_tag|>` (and end with `<|eom_id|>`), so the tag is allowed in front of them.
        """
        markup = Markup(special_tokens, self.markers)
        lines = [
            f"call: {json_rule(any_call_object(tools, 'parameters'))}",
            f"calls: {markup(PYTHON_TAG)}? " + repeated("call", parallel, '"; "'),
        ]
        if mode == "auto":
            start = start_rule("TEXT | calls", markup, think, in_reasoning, think_budget)
            lines += [*start, "TEXT: /[^{](?s:.*)/"]
        else:
            lines += start_rule("calls", markup, think, in_reasoning, think_budget)
        return "\n".join(lines) + "\n"
