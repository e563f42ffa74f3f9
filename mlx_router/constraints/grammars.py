"""Grammars for structured output: OpenAI `response_format` and tool-call Lark text -> llguidance grammars.

A grammar here is the string llguidance's `LLMatcher` takes. Building one is pure (no tokenizer, no MLX);
`mlx_router.core.constrained.ConstraintCompiler` compiles it against a model's tokenizer.

`response_format`:
- `{"type": "text"}` (or none): no grammar.
- `{"type": "json_object"}`: any JSON object.
- `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`: that schema (a missing `schema`
  means any JSON object). The schema is enforced whether `strict` is true or not.

JSON schema subset that is enforced (llguidance 1.9.1, strict mode; tests/unit/test_constraints.py holds
the table):
- types: `type` (one or a list), `enum`, `const` (any JSON value), boolean schemas (`true`; `false` is an
  error);
- composition: `anyOf`, `allOf`, `oneOf` only when its branches are provably disjoint (e.g. different types or
  different `const` tags), `$ref` to `#/$defs/...`, `#/definitions/...` or any local JSON pointer, recursion;
- objects: `properties`, `required`, `additionalProperties` (bool or schema), `patternProperties` (disjoint
  patterns), `minProperties`/`maxProperties` (only when every listed property is required);
- arrays: `items`, `prefixItems` (and the older `items: [...]` + `additionalItems`), `minItems`, `maxItems`;
- strings: `minLength`, `maxLength`, `pattern` (Rust regex syntax: no look-around, no back-references),
  `format` in date-time, time, date, duration, email, hostname, ipv4, ipv6, uuid, uri;
- numbers: `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (numbers or draft-4 booleans),
  `multipleOf`.

Rejected with `UnsupportedSchemaError` (HTTP 400, `param: "response_format"`): `uniqueItems` (even false),
`contains`/`minContains`/`maxContains`, `not`, `if`/`then`/`else`, `dependentRequired`, `dependentSchemas`,
`dependencies`, `propertyNames`, `unevaluatedProperties`, `unevaluatedItems`, `$dynamicRef`, `$recursiveRef`,
remote `$ref`s, unknown `format`s (e.g. `uri-reference`, `password`), overlapping `oneOf` branches,
look-around or back-references in `pattern`, and unsatisfiable or malformed schemas.

Accepted but not checked, as JSON Schema defines them as annotations: `title`, `description`, `default`,
`examples`, `deprecated`, `readOnly`/`writeOnly`, `$comment`, `$schema`, `$id`, `$anchor`, `contentEncoding`,
`contentMediaType`, `contentSchema`, `format` on non-strings, unknown keywords, and OpenAPI's `nullable` and
`discriminator` (so `nullable: true` does NOT allow null: write `"type": ["string", "null"]`).

Departures that still give schema-valid output: object properties come in the order of `properties`, and
each gap between JSON tokens takes at most one blank, or one line break and an indent (unbounded whitespace
is a known way for models to loop until `max_tokens`). A schema may change the whitespace rule with
llguidance's top-level `x-guidance` key (`whitespace_flexible`, `whitespace_pattern`, separators), but never
its `lenient` or `coerce_one_of`, which would let unsupported keywords through.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import llguidance

from mlx_router.constraints.errors import UnsupportedSchemaError

JSON_WHITESPACE = r"[\x20\x09]|\x0D?\x0A[\x20\x09]{0,24}"
"""Whitespace allowed in each gap between JSON tokens: a blank, or a line break and an indent of up to 24."""

_STRICT_OPTIONS = {"lenient": False, "coerce_one_of": False}
_ANY_OBJECT: dict[str, Any] = {"type": "object"}
_GAP = "/[ \\t\\r\\n]{1,8}/"  # between the end of the thinking block and the JSON answer


def grammar_from_lark(text: str) -> str:
    """Lark text (llguidance's dialect, `%json {...}` allowed) as a grammar; it is checked when compiled."""
    return str(llguidance.LLMatcher.grammar_from_lark(text))


def validate_json_schema(schema: Any, *, param: str = "response_format") -> None:
    """Raise `UnsupportedSchemaError` (naming `param`) unless llguidance can enforce `schema` exactly."""
    _validated_grammar(_prepared_schema(schema, param), param)


def json_schema_grammar(schema: Any, *, param: str = "response_format") -> str:
    """A grammar for exactly one JSON value matching `schema`, after checking the schema is enforceable."""
    return _validated_grammar(_prepared_schema(schema, param), param)


def lark_json(schema: Any, *, param: str = "tools") -> str:
    """A Lark `%json {...}` fragment for `schema`, with the checks and whitespace rule of response_format.

    Tool-call grammars use it for arguments, so a tool whose parameters use an unsupported keyword fails with
    a 400 naming `param` instead of compiling to a grammar that ignores the keyword.
    """
    prepared = _prepared_schema(schema, param)
    _validated_grammar(prepared, param)
    return "%json " + json.dumps(prepared, ensure_ascii=False)


def response_format_grammar(
    response_format: Any,
    *,
    think: tuple[str | int, str | int] | None = None,
    in_reasoning: bool = False,
    tags_are_tokens: bool = True,
    think_budget: int | None = None,
) -> str | None:
    """The grammar enforcing an OpenAI `response_format`, or None when it asks for plain text.

    `think` = (open tag, close tag) for a thinking model whose prompt lets it think: the grammar then allows
    one thinking block of free text before the JSON, or, with `in_reasoning` (the prompt already opened the
    block), requires free text up to the close tag first. A tag is a token id, or its text: with
    `tags_are_tokens` (Qwen3, DeepSeek-R1 and most thinking models) a text tag names a special token written
    `<...>`, otherwise it is matched as plain text; `ConstraintCompiler.think_tags` picks the right form for a
    model. `think_budget` caps the thinking at that many tokens, after which the close tag is forced (where
    it is a token), so the JSON always gets written. Raises `UnsupportedSchemaError` for a schema that cannot
    be enforced.
    """
    schema = response_format_schema(response_format)
    if schema is None:
        return None
    if think is None:
        return json_schema_grammar(schema)
    answer = lark_json(schema, param="response_format")
    return grammar_from_lark(_reasoning_lark(answer, think, in_reasoning, tags_are_tokens, think_budget))


def thinking_budget_grammar(think: tuple[str | int, str | int], *, in_reasoning: bool, budget: int) -> str | None:
    """A thinking block of at most `budget` tokens, then free text: the budget of a request that asks for one
    and nothing else constrained. None where the close tag is not one token (a text tag cannot be forced)."""
    if not isinstance(think[1], int):
        return None
    return grammar_from_lark(_reasoning_lark("/(?s:.*)/", think, in_reasoning, True, budget))


def response_format_schema(response_format: Any) -> Any | None:
    """The JSON schema a `response_format` (dict or pydantic model) asks for; None for plain text."""
    if response_format is None:
        return None
    fmt = _as_mapping(response_format, "response_format")
    kind = fmt.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return _ANY_OBJECT
    if kind != "json_schema":
        raise UnsupportedSchemaError(
            f"response_format.type must be 'text', 'json_object' or 'json_schema', not {kind!r}",
            param="response_format.type",
        )
    spec = fmt.get("json_schema")
    if spec is None:
        raise UnsupportedSchemaError(
            "response_format.json_schema is required when type is 'json_schema'", param="response_format"
        )
    spec = _as_mapping(spec, "response_format.json_schema")
    schema = spec.get("schema")
    return _ANY_OBJECT if schema is None else schema


def _as_mapping(value: Any, param: str) -> Mapping[str, Any]:
    # pydantic wire types serialize with their OpenAI names (`schema` is an alias there)
    if hasattr(value, "model_dump"):
        value = value.model_dump(by_alias=True, exclude_none=True)
    if not isinstance(value, Mapping):
        raise UnsupportedSchemaError(f"{param} must be an object", param=param)
    return value


def _prepared_schema(schema: Any, param: str) -> dict[str, Any]:
    """A copy of `schema` whose top-level `x-guidance` sets our compile options."""
    if schema is True:
        schema = {}
    if not isinstance(schema, Mapping):
        raise UnsupportedSchemaError(
            f"the JSON schema must be an object (or true), not {type(schema).__name__}", param=param
        )
    prepared = dict(schema)
    user_options = prepared.get("x-guidance")
    options = dict(user_options) if isinstance(user_options, Mapping) else {}
    if "whitespace_pattern" not in options and "whitespace_flexible" not in options:
        options["whitespace_pattern"] = JSON_WHITESPACE
    options.update(_STRICT_OPTIONS)
    prepared["x-guidance"] = options
    return prepared


def _validated_grammar(prepared: dict[str, Any], param: str) -> str:
    try:
        grammar = str(llguidance.LLMatcher.grammar_from_json_schema(json.dumps(prepared)))
    except (TypeError, ValueError) as exc:
        raise UnsupportedSchemaError(f"invalid JSON schema: {exc}", param=param) from exc
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, None)
    if is_error:
        detail = " ".join(" ".join(messages).split())
        raise UnsupportedSchemaError(f"JSON schema not supported for constrained output: {detail}", param=param)
    return grammar


def _reasoning_lark(
    answer: str,
    think: tuple[str | int, str | int],
    in_reasoning: bool,
    tags_are_tokens: bool,
    think_budget: int | None = None,
) -> str:
    """Lark text: [thinking block] then the JSON answer (`answer` is a `%json {...}` fragment)."""
    open_tag, close_tag = (_tag_ref(tag, tags_are_tokens) for tag in think)
    if close_tag is not None:
        # special tokens never match text, so the free text can neither contain nor fake the close tag
        body = f"THINK_TEXT? {close_tag}"
        rules = ["THINK_TEXT: /(?s:.+)/"]
        if think_budget is not None:  # llguidance ends the rule after that many tokens
            body = f"think_text? {close_tag}"
            rules = [f"think_text[max_tokens={max(1, int(think_budget))}]: /(?s:.+)/"]
    else:
        # a lazy lexeme: the thinking text ends at the first occurrence of the close tag
        body = "think_text"
        rules = [f"think_text[suffix={json.dumps(think[1])}]: /(?s:.*)/"]
    if in_reasoning:
        start = f"start: {body} {_GAP}? answer"
    else:
        opened = open_tag if open_tag is not None else json.dumps(think[0])
        start = f"start: ({opened} {body} {_GAP}?)? answer"
    return "\n".join([start, *rules, f"answer: {answer}", ""])


def _tag_ref(tag: str | int, tags_are_tokens: bool) -> str | None:
    """The Lark reference to a tag that is a special token, or None for a plain-text tag."""
    if isinstance(tag, int):
        return f"<[{tag}]>"
    if not tags_are_tokens:
        return None
    if not (tag.startswith("<") and tag.endswith(">")) or any(c in tag[1:-1] for c in "<> \n"):
        raise ValueError(f"special token {tag!r} cannot be named in a grammar; pass its token id")
    return tag
