"""Qwen3-Coder XML calls.

```
<tool_call>
<function=NAME>
<parameter=P>
VALUE
</parameter>
</function>
</tool_call>
```
Values are text, typed by the tool's schema (`xml_values`). A bare `<function=...>...</function>` (without the
`<tool_call>` wrapper) is read too, as Qwen3-Coder sometimes drops it.
"""

from __future__ import annotations

import json
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
    whole_match_body,
)
from mlx_router.parsing.tools.scanning import (
    Scan,
    Segment,
    TextRun,
    call,
    content,
    marker_pattern,
    read_gap,
    read_text,
    skip_space,
)
from mlx_router.parsing.tools.streaming import StreamingToolParser
from mlx_router.parsing.tools.xml_values import convert_value, property_schema, schema_types

OPEN, CLOSE = "<tool_call>", "</tool_call>"
FUNCTION, FUNCTION_END = "<function=", "</function>"
PARAMETER, PARAMETER_END = "<parameter=", "</parameter>"
_OPENER = marker_pattern([OPEN, FUNCTION])
_FUNCTION = re.compile(r"\s*<function=([^>\n]*)>")
_PARAMETER = re.compile(r"<parameter=([^>\n]*)>")

_SCALAR_TERMINALS = {
    "integer": "/-?(0|[1-9][0-9]*)/",
    "number": r"/-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/",
    "boolean": '("true" | "false")',
}


def _strip_newline(value: str) -> str:
    """The value without the one newline after the opening tag and the one before the closing tag."""
    value = value[1:] if value.startswith("\n") else value
    return value[:-1] if value.endswith("\n") else value


class Qwen3CoderToolParser(StreamingToolParser):
    """Qwen3-Coder's `<function=...>` / `<parameter=...>` calls."""

    name = "qwen3_coder"
    call_openers = (OPEN, FUNCTION)
    markers = (OPEN, CLOSE)

    @classmethod
    def detect(cls, chat_template: str | None, vocab: Collection[str]) -> bool:
        """Its template teaches the `<function=...>` and `<parameter=...>` tags."""
        template = chat_template or ""
        return FUNCTION in template and PARAMETER in template

    def _initial_state(self) -> tuple[bool, bool]:
        return False, False  # (in the gap after a call, some content was sent)

    def _scan(self, text: str, state: Any, final: bool) -> Scan:
        scan = Scan()
        (gap, seen), pos = state, 0

        def run_at(start: int) -> TextRun:
            return read_text(text, start, _OPENER, [OPEN, FUNCTION], final)

        while True:
            run = read_gap(text, pos, run_at, final, seen) if gap else run_at(pos)
            if run.text:
                scan.segments.append(content(run.text))
                gap, seen = False, True
            pos = run.end
            if run.opener is None:
                break
            wrapped = run.opener.group() == OPEN
            closer = CLOSE if wrapped else FUNCTION_END
            close = text.find(closer, pos + len(run.opener.group()))
            if close < 0 and not final:
                body = text[pos + len(OPEN) :] if wrapped else text[pos:]
                scan.pending = self._call(text[pos:], body, complete=False)
                break
            end = len(text) if close < 0 else close + len(closer)
            body = text[pos + len(OPEN) : close if close >= 0 else end] if wrapped else text[pos:end]
            scan.segments.append(self._call(text[pos:end], body, complete=True))
            pos, gap = end, True
        scan.commit, scan.state = pos, (gap, seen)
        return scan

    def _call(self, raw: str, body: str, complete: bool) -> Segment:
        """A call from its body; incomplete bodies give the name and the parameters finished so far."""
        match = _FUNCTION.match(body)
        if match is None:
            return call(raw, None, None, "no <function=...> tag")
        name = match.group(1).strip()
        inner = body[match.end() :]
        end = inner.find(FUNCTION_END)
        if end >= 0:
            if inner[end + len(FUNCTION_END) :].strip():
                return call(raw, name, None, "text after </function>")
            inner = inner[:end]
        pairs, error = self._parameters(name, inner, complete)
        if not complete:
            return call(raw, name, "{" + ", ".join(pairs))
        return call(raw, name, "{" + ", ".join(pairs) + "}", error)

    def _parameters(self, name: str, inner: str, complete: bool) -> tuple[list[str], str | None]:
        """`"key": value` JSON texts of the parameters (only the closed ones when not complete)."""
        schema = self.specs.schema(name)
        pairs: list[str] = []
        pos = skip_space(inner, 0)
        while pos < len(inner):
            match = _PARAMETER.match(inner, pos)
            if match is None:
                return pairs, "text outside <parameter> tags"
            end = inner.find(PARAMETER_END, match.end())
            if end < 0:
                if not complete:
                    break
                following = _PARAMETER.search(inner, match.end())  # a close tag was left out
                end = following.start() if following else len(inner)
                after = end
            else:
                after = end + len(PARAMETER_END)
            key = match.group(1).strip()
            value = convert_value(_strip_newline(inner[match.end() : end]), property_schema(schema, key))
            pairs.append(json.dumps(key, ensure_ascii=False) + ": " + json.dumps(value, ensure_ascii=False))
            pos = skip_space(inner, after)
        return pairs, None

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
        """The XML call of one of the tools; parameters in schema order, each value typed by its schema.

        Strings run to the first `\\n</parameter>`; integers, numbers and booleans are forced by regex;
        anything else is written as JSON checked against the property's schema.
        """
        markup = Markup(special_tokens, self.markers)
        lines = [
            f'call: {markup(OPEN)} "\\n" function "\\n" {markup(CLOSE)}',
            "string_value[lazy]: /(?s:.*)\\n<\\/parameter>/",
        ]
        names = []
        for index, (name, schema) in enumerate(functions(tools)):
            names.append(f"function_{index}")
            lines += self._function_rules(index, name, schema)
        lines.append("function: " + " | ".join(names))
        lines.append("calls: " + repeated("call", parallel, '"\\n"'))
        if mode == "auto":
            lines += [
                *start_rule("TEXT | TEXT? calls", markup, think, in_reasoning, think_budget),
                free_text_terminal("TEXT", OPEN, markup),
            ]
        else:
            lines += start_rule("calls", markup, think, in_reasoning, think_budget)
        return "\n".join(lines) + "\n"

    @staticmethod
    def _function_rules(index: int, name: str, schema: Mapping[str, Any]) -> list[str]:
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        rules, parts = [], []
        for number, (key, prop) in enumerate(properties.items()):
            rule = f"param_{index}_{number}"
            opening = lark_string(f"<parameter={key}>\n")
            kinds = [t for t in schema_types(prop) if t != "null"] if isinstance(prop, Mapping) else []
            whole = whole_match_body(prop.get("pattern")) if isinstance(prop, Mapping) else None
            if kinds == ["string"] and whole is not None:  # a custom tool's grammar: the raw value follows it
                rules.append(f'{rule}: {opening} /{_lark_regex(whole)}/ "\\n</parameter>\\n"')
            elif kinds == ["string"]:
                rules.append(f'{rule}: {opening} string_value "\\n"')
            elif len(kinds) == 1 and kinds[0] in _SCALAR_TERMINALS:
                rules.append(f'{rule}: {opening} {_SCALAR_TERMINALS[kinds[0]]} "\\n</parameter>\\n"')
            else:
                value = json_rule(prop if isinstance(prop, Mapping) else {})
                rules.append(f'{rule}: {opening} {value} "\\n</parameter>\\n"')
            parts.append(rule if key in required else rule + "?")
        head = lark_string(f"<function={name}>\n")
        rules.append(f"function_{index}: {head} {' '.join(parts)} {lark_string(FUNCTION_END)}")
        return rules


def _lark_regex(regex: str) -> str:
    """`regex` inside a Lark `/.../` terminal: its unescaped slashes escaped."""
    return re.sub(r"(?<!\\)/", r"\/", regex)
