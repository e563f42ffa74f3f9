"""Helpers that write llguidance Lark grammars for tool calls (syntax: llguidance docs/syntax.md)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from mlx_router.constraints.grammars import lark_json
from mlx_router.parsing.tools.specs import function_specs

_REGEX_META = set("\\.+*?()|[]{}^$/&~#-")


def lark_string(text: str) -> str:
    """A Lark string literal matching `text` exactly."""
    return json.dumps(text, ensure_ascii=False)


def regex_literal(text: str) -> str:
    """`text` escaped for a /regex/ (Rust syntax, where `\\<` is a word boundary: escape metachars only)."""
    return "".join("\\" + c if c in _REGEX_META else c for c in text)


def json_rule(schema: Mapping[str, Any]) -> str:
    """An inline JSON-schema nonterminal, with response_format's checks and whitespace limit.

    Raises `UnsupportedSchemaError` (param "tools") for a keyword llguidance cannot enforce.
    """
    return lark_json(dict(schema), param="tools")


class Markup:
    """Writes a marker into a grammar: the special token where the tokenizer has one, else its text.

    llguidance sees an added token only as that token, never as the characters of its text, so a marker
    that is a token must be written as one; `<[id]>` works for every name (names like `[ARGS]` cannot be
    written as `<[ARGS]>`, which reads as an id list).
    """

    def __init__(self, special_tokens: Mapping[str, int] | None, usual: Collection[str]) -> None:
        self.special_tokens = special_tokens
        self.usual = usual

    def __call__(self, marker: str) -> str:
        if self.special_tokens is None:
            # `<name>` refers to the token whose text is `<name>`; other names need an id
            named = marker in self.usual and marker.startswith("<") and marker.endswith(">")
            return marker if named else lark_string(marker)
        token = self.special_tokens.get(marker)
        return f"<[{token}]>" if token is not None else lark_string(marker)

    def is_token(self, marker: str) -> bool:
        """Whether `marker` is written as a token (and so can never appear inside free text)."""
        return not self(marker).startswith('"')


def functions(tools: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, parameters schema) of each tool; a grammar needs at least one."""
    specs = function_specs(tools)
    if not specs:
        raise ValueError("a tool-call grammar needs at least one function tool")
    return list(specs.items())


def repeated(rule: str, parallel: bool, separator: str = "") -> str:
    """One `rule`, or one or more of them (separated by a Lark fragment) when calls may be parallel."""
    if not parallel:
        return rule
    return f"{rule} ({separator} {rule})*" if separator else f"{rule}+"


def free_text_terminal(name: str, opener: str, markup: Markup) -> str:
    """A terminal for free text that cannot contain the opener (needed only when the opener is plain text)."""
    if markup.is_token(opener):
        return f"{name}: /(?s:.+)/"
    return f"{name}: /(?s:.+)/ & ~/(?s:.*){regex_literal(opener)}(?s:.*)/"


def call_object_schema(name: str, schema: Mapping[str, Any], args_key: str) -> dict[str, Any]:
    """JSON schema of a `{"name": NAME, "<args_key>": {...}}` call object."""
    return {
        "type": "object",
        "properties": {"name": {"const": name}, args_key: dict(schema)},
        "required": ["name", args_key],
        "additionalProperties": False,
    }


def any_call_object(tools: list[dict[str, Any]], args_key: str) -> dict[str, Any]:
    """JSON schema of a call object of any of the tools."""
    options = [call_object_schema(name, schema, args_key) for name, schema in functions(tools)]
    return options[0] if len(options) == 1 else {"anyOf": options}


def start_rule(
    body: str,
    markup: Markup,
    think: tuple[str, str] | None,
    in_reasoning: bool,
    think_budget: int | None = None,
) -> list[str]:
    """The `start` rule: `body`, after one optional thinking block when the model thinks before it answers.

    `think` is the (open, close) tag pair; with `in_reasoning` the prompt already opened the block, so the
    output starts inside it and must close it. Without `think` the answer starts at once. `think_budget`
    caps the thinking at that many tokens, after which the close tag is forced (only where it is a token).
    """
    if think is None:
        return [f"start: {body}"]
    tags = Markup(markup.special_tokens, (*markup.usual, *think))
    open_tag, close_tag = think
    if tags.is_token(close_tag):  # a token never matches text: free text cannot fake the close tag
        block, rules = f"THINK_TEXT? {tags(close_tag)}", ["THINK_TEXT: /(?s:.+)/"]
        if think_budget is not None:
            block, rules = f"think_text? {tags(close_tag)}", [budgeted_text("think_text", think_budget)]
    else:  # a lazy lexeme that ends at the first close tag
        block, rules = "think_text", [f"think_text[suffix={lark_string(close_tag)}]: /(?s:.*)/"]
    gap = "/[ \\t\\r\\n]{1,8}/"
    if in_reasoning:
        return [f"start: {block} {gap}? ({body})", *rules]
    return [f"start: ({tags(open_tag)} {block} {gap}?)? ({body})", *rules]


def whole_match_body(pattern: object) -> str | None:
    """The regex X of a string `pattern` written `^(?:X)$` (a custom tool's input grammar,
    `constraints/custom_tools.py`), which must match the whole string; None for any other pattern.

    Formats that write a string argument raw (not as JSON) can hold it to X as one lexeme; a pattern of another
    form means "contains a match" in JSON Schema, which such a format does not enforce.
    """
    if not isinstance(pattern, str) or not (pattern.startswith("^(?:") and pattern.endswith(")$")):
        return None
    depth, in_class, escaped = 0, False, False
    for i, c in enumerate(pattern[1:-1], start=1):  # the group opened at 1 must close at the last ")"
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0 and i != len(pattern) - 2:
                return None
    return pattern[4:-2]


def budgeted_text(rule: str, budget: int, regex: str = "/(?s:.+)/") -> str:
    """A free-text rule that llguidance ends after `budget` tokens (the grammar then forces what follows).

    Thinking before a forced answer needs a bound: a model that never closes its thinking would otherwise
    spend the whole output on it and never write the answer the request demands.
    """
    return f"{rule}[max_tokens={max(1, int(budget))}]: {regex}"
