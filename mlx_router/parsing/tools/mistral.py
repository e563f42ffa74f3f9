"""Mistral calls, both generations.

- before tokenizer v11 (Mistral 7B v0.3, Nemo, Small 3.1):
  `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`
- v11 and later (Small 3.2, Magistral, Devstral): `[TOOL_CALLS]NAME[ARGS]{...}`, one marker per call, with an
  optional `[CALL_ID]xxxxxxxxx` after the name. `[ARGS]` is a control token: with special tokens skipped in
  decoding the text reads `[TOOL_CALLS]NAME{...}`, which is accepted too.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from mlx_router.parsing.tools.base import ToolChoiceMode
from mlx_router.parsing.tools.grammar import (
    Markup,
    any_call_object,
    free_text_terminal,
    functions,
    json_rule,
    lark_string,
    start_rule,
)
from mlx_router.parsing.tools.scanning import (
    Scan,
    TextRun,
    call,
    call_from_object,
    content,
    json_end,
    json_prefix,
    marker_pattern,
    object_arguments,
    partial_call_object,
    read_gap,
    read_text,
    skip_space,
)
from mlx_router.parsing.tools.streaming import StreamingToolParser

TOOL_CALLS, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
_OPENER = marker_pattern([TOOL_CALLS])
_HEAD = re.compile(r"([\w.\-]+)(?:\[CALL_ID\]\w*)?(?:\[ARGS\])?\s*")
_KEYS = ("arguments",)


class MistralToolParser(StreamingToolParser):
    """`[TOOL_CALLS]` followed by a JSON array of calls (old) or by `NAME[ARGS]{...}` (new)."""

    name = "mistral"
    call_openers = (TOOL_CALLS,)
    markers = (TOOL_CALLS, ARGS, CALL_ID)

    @classmethod
    def detect(cls, chat_template: str | None, vocab: Collection[str]) -> bool:
        """Mistral tokenizers have the `[TOOL_CALLS]` control token; their templates write it."""
        return TOOL_CALLS in vocab or TOOL_CALLS in (chat_template or "")

    def _initial_state(self) -> tuple[str, bool]:
        # ("text", "gap" just after a call, or "array" inside an old-style list; some content was sent)
        return "text", False

    def _scan(self, text: str, state: Any, final: bool) -> Scan:
        scan = Scan()
        (state, seen), pos = state, 0

        def run_at(start: int) -> TextRun:
            return read_text(text, start, _OPENER, [TOOL_CALLS], final)

        while pos < len(text) or final:
            if state == "array":
                pos = skip_space(text, pos, ",")
                if pos == len(text):
                    break
                if text[pos] == "]":
                    pos, state = pos + 1, "gap"
                    continue
                if text[pos] != "{":
                    state = "text"
                    continue
                end = json_end(text, pos, self.json_memo)
                if end is None and not final:
                    name, args = partial_call_object(text, pos, _KEYS, self.json_memo)
                    scan.pending = call(text[pos:], name, args)
                    break
                end = len(text) if end is None else end
                name, args, error = call_from_object(text[pos:end], _KEYS, required=False)
                scan.segments.append(call(text[pos:end], name, args, error))
                pos = end
                continue
            run = read_gap(text, pos, run_at, final, seen) if state == "gap" else run_at(pos)
            if run.text:
                scan.segments.append(content(run.text))
                state, seen = "text", True
            pos = run.end
            if run.opener is None:
                break
            pos, state, done = self._after_marker(text, pos, final, scan)
            if done:
                break
        scan.commit, scan.state = pos, (state, seen)
        return scan

    def _after_marker(self, text: str, pos: int, final: bool, scan: Scan) -> tuple[int, str, bool]:
        """Read what follows a `[TOOL_CALLS]` at pos: (new position, new state, stop scanning)."""
        start = skip_space(text, pos + len(TOOL_CALLS))
        if start < len(text) and text[start] == "[":
            return start + 1, "array", False
        if start < len(text) and text[start] == "{":
            end = json_end(text, start, self.json_memo)
            if end is None and not final:
                name, args = partial_call_object(text, start, _KEYS, self.json_memo)
                scan.pending = call(text[pos:], name, args)
                return pos, "text", True
            end = len(text) if end is None else end
            name, args, error = call_from_object(text[start:end], _KEYS, required=False)
            scan.segments.append(call(text[pos:end], name, args, error))
            return end, "gap", False
        brace = text.find("{", start)
        head = _HEAD.fullmatch(text, start, brace) if brace >= 0 else None
        if brace < 0 and not final:
            name = re.split(r"\[(?:ARGS|CALL_ID)\]", text[start:])[0] if ARGS in text[start:] else None
            scan.pending = call(text[pos:], name, None)
            return pos, "text", True
        if brace < 0 or head is None:
            stop = len(text) if brace < 0 else brace
            scan.segments.append(call(text[pos:stop], None, None, "no function name before the arguments"))
            return stop, "text", False
        end = json_end(text, brace, self.json_memo)
        if end is None and not final:
            scan.pending = call(text[pos:], head.group(1), json_prefix(text, brace, len(text), self.json_memo))
            return pos, "text", True
        end = len(text) if end is None else end
        args = object_arguments(text[brace:end])
        error = None if args is not None else "arguments are not a JSON object"
        scan.segments.append(call(text[pos:end], head.group(1), args, error))
        return end, "gap", False

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
        """`[TOOL_CALLS]` then either generation's syntax (the model keeps to the one it was trained on).

        `[TOOL_CALLS]` can only be written as a token by id, so without `special_tokens` it is plain text.
        """
        markup = Markup(special_tokens, self.markers)
        array: dict[str, Any] = {"type": "array", "items": any_call_object(tools, "arguments"), "minItems": 1}
        if not parallel:
            array["maxItems"] = 1
        named = [f"{lark_string(name)} {markup(ARGS)} {json_rule(schema)}" for name, schema in functions(tools)]
        lines = [
            f'old: " "? {json_rule(array)}',
            "named_call: " + " | ".join(named),
            f"new: named_call ({markup(TOOL_CALLS)} named_call)*" if parallel else "new: named_call",
            f"calls: {markup(TOOL_CALLS)} (old | new)",
        ]
        if mode == "auto":
            lines += [
                *start_rule("TEXT | TEXT? calls", markup, think, in_reasoning, think_budget),
                free_text_terminal("TEXT", TOOL_CALLS, markup),
            ]
        else:
            lines += start_rule("calls", markup, think, in_reasoning, think_budget)
        return "\n".join(lines) + "\n"
