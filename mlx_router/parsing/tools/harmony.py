"""gpt-oss "harmony" output: messages on channels (openai/harmony docs/format.md).

```
<|channel|>analysis<|message|>THINKING<|end|>
<|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>
<|channel|>final<|message|>ANSWER<|return|>
```
analysis is reasoning, final (and commentary without a recipient, a "preamble") is content, and a message to
`functions.NAME` is a call; the recipient may also stand before `<|channel|>`. `<|call|>` and `<|return|>` are
EOS tokens the serving layer strips, so a message may also end where the text ends.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from mlx_router.parsing.tools.base import ToolChoiceMode
from mlx_router.parsing.tools.grammar import (
    Markup,
    budgeted_text,
    functions,
    json_rule,
    lark_string,
    regex_literal,
)
from mlx_router.parsing.tools.scanning import (
    Scan,
    Segment,
    call,
    held_suffix,
    json_prefix,
    marker_pattern,
    object_arguments,
    skip_space,
)
from mlx_router.parsing.tools.streaming import StreamingToolParser

START, END, MESSAGE, CHANNEL = "<|start|>", "<|end|>", "<|message|>", "<|channel|>"
CONSTRAIN, RETURN, CALL = "<|constrain|>", "<|return|>", "<|call|>"
_STOPS = (END, CALL, RETURN, START, CHANNEL)
_CONSUMED = (END, CALL, RETURN)  # <|start|> and <|channel|> open the next header instead
_BODY_STOP = marker_pattern(_STOPS)
_HEADER_STARTS = ("<|", "to=", "assistant")
_MAX_HEADER = 256  # a header is short: text that long without <|message|> is plain text
_CHANNEL = re.compile(r"<\|channel\|>\s*(\w+)")
_RECIPIENT = re.compile(r"\bto=([^\s<]+)")


def _header(header: str) -> tuple[str, str | None]:
    """(channel, function name or None) of a message header."""
    channel = _CHANNEL.search(header)
    recipient = _RECIPIENT.search(header)
    target = recipient.group(1) if recipient else None
    if target == "assistant":
        target = None
    elif target is not None and target.startswith("functions."):
        target = target[len("functions.") :]
    return (channel.group(1) if channel else "final"), target


def _arguments(body: str) -> tuple[str | None, str | None]:
    """(arguments, error) of a call message body: one JSON object (an empty body means no arguments)."""
    args = object_arguments(body.strip() or "{}")
    return args, None if args is not None else "arguments are not a JSON object"


class HarmonyToolParser(StreamingToolParser):
    """Splits harmony output into reasoning (analysis), content (final, preambles) and function calls."""

    name = "harmony"
    markers = (START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL)
    handles_reasoning = True

    @classmethod
    def detect(cls, chat_template: str | None, vocab: Collection[str]) -> bool:
        """gpt-oss tokenizers (o200k_harmony) and templates have `<|channel|>` and `<|message|>`."""
        template = chat_template or ""
        return (CHANNEL in vocab and MESSAGE in vocab) or (CHANNEL in template and MESSAGE in template)

    def _initial_state(self) -> tuple[str, str]:
        return ("header", "content")  # (reading a header or a body, what the body is: content/reasoning)

    def _scan(self, text: str, state: Any, final: bool) -> Scan:
        scan = Scan()
        mode, kind = state
        pos = 0
        while True:
            if mode == "body":
                pos, done = self._body(text, pos, kind, final, scan)
                if done:
                    break
                mode = "header"
                continue
            start = skip_space(text, pos)
            rest = text[start : start + _MAX_HEADER]
            if start == len(text) or (not final and any(h.startswith(rest) for h in _HEADER_STARTS)):
                pos = start if start == len(text) else pos
                break
            message = text.find(MESSAGE, start, start + _MAX_HEADER + len(MESSAGE))
            if not rest.startswith(_HEADER_STARTS) or (message < 0 and len(rest) == _MAX_HEADER):
                mode, kind, pos = "body", "content", start  # plain text without any header
                continue
            if message < 0:
                if final and "<|" not in rest:
                    scan.segments.append(Segment("content", text[start:]))
                pos = pos if not final else len(text)  # a header cut off by the end carries nothing
                break
            channel, function = _header(text[start:message])
            if function is None:
                mode, kind = "body", "reasoning" if channel == "analysis" else "content"
                pos = message + len(MESSAGE)
                continue
            stop = self._call(text, start, message + len(MESSAGE), function, final, scan)
            if stop is None:
                pos = start
                break
            pos = stop
        scan.commit, scan.state = pos, (mode, kind)
        return scan

    @staticmethod
    def _body(text: str, pos: int, kind: str, final: bool, scan: Scan) -> tuple[int, bool]:
        """Stream a content/reasoning body: (new position, whether the text ran out before its end)."""
        match = _BODY_STOP.search(text, pos)
        if match is None:
            end = len(text) if final else len(text) - held_suffix(text, _STOPS, pos)
            if end > pos:
                scan.segments.append(Segment(kind, text[pos:end]))  # type: ignore[arg-type]
            return end, True
        if match.start() > pos:
            scan.segments.append(Segment(kind, text[pos : match.start()]))  # type: ignore[arg-type]
        return (match.end() if match.group() in _CONSUMED else match.start()), False

    def _call(self, text: str, start: int, body: int, function: str, final: bool, scan: Scan) -> int | None:
        """Read a call message whose body starts at `body`: its end, or None while it is unfinished."""
        match = _BODY_STOP.search(text, body)
        if match is None and not final:
            prefix = None
            if self.eager:  # only eager streaming reads an unfinished call
                available = text[: len(text) - held_suffix(text, _STOPS, body)]
                offset = skip_space(available, body)
                if available[offset : offset + 1] == "{":
                    prefix = json_prefix(available, offset, len(available), self.json_memo)
            scan.pending = call(text[start:], function, prefix)
            return None
        stop = match.start() if match else len(text)
        end = match.end() if match and match.group() in _CONSUMED else stop
        args, error = _arguments(text[body:stop])
        scan.segments.append(call(text[start:end], function, args, error))
        return end

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
        """Optional analysis, then a commentary message to one of the functions ending in `<|call|>`.

        `<|call|>` ends the turn, so there is one call per turn whatever `parallel` says; the analysis channel
        is the thinking, so `think` is not used; `think_budget` caps the analysis where `<|end|>` is a token.
        """
        markup = Markup(special_tokens, self.markers)
        options = [
            f'{lark_string(name)} " "? {markup(CONSTRAIN)} "json" {markup(MESSAGE)} {json_rule(schema)} {markup(CALL)}'
            for name, schema in functions(tools)
        ]
        thought = "/(?s:.*)/"
        if not markup.is_token(END):
            thought = f"/(?s:.*)/ & ~/(?s:.*){regex_literal(END)}(?s:.*)/"
        analysis_text, budget_rules = "THOUGHT", []
        if think_budget is not None and markup.is_token(END):
            analysis_text, budget_rules = "analysis_text?", [budgeted_text("analysis_text", think_budget)]
        lines = [
            f'analysis: {markup(CHANNEL)} "analysis" {markup(MESSAGE)} {analysis_text} {markup(END)} '
            f'{markup(START)} "assistant"',
            f"THOUGHT: {thought}",
            *budget_rules,
            f'call: {markup(CHANNEL)} "commentary to=functions." (' + " | ".join(options) + ")",
        ]
        if mode == "auto":
            lines += [
                f'final: {markup(CHANNEL)} "final" {markup(MESSAGE)} THOUGHT {markup(RETURN)}?',
                "start: analysis? (call | final)",
            ]
        else:
            lines.append("start: analysis? call")
        return "\n".join(lines) + "\n"
