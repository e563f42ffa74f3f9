"""Custom (freeform) tools' grammars in the tool-call grammar: their input held to the tool's `format`.

Templates see a custom tool as a function of one string `input` (`conversation/normalize.py`), so the model
writes `{"input": "<raw text>"}` inside its call markup. The call grammar is built from the tool definitions,
and a JSON string can be held to a regex (its `pattern`, which llguidance matches against the decoded text and
escapes itself), so a custom tool's grammar becomes that pattern: a `regex` definition as it is, a `lark` one
through `lark_regex.py` (grammars without recursion; Codex's `apply_patch` is one), written `^(?:X)$` (a whole
match). Formats whose call grammar writes a string argument raw (qwen3_coder's XML parameters) take X as the
value's own lexeme (`parsing/tools/grammar.py`'s `whole_match_body`).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from mlx_router.constraints.errors import UnsupportedSchemaError
from mlx_router.constraints.grammars import validate_json_schema
from mlx_router.constraints.lark_regex import lark_to_regex
from mlx_router.conversation.model import CustomTool
from mlx_router.conversation.normalize import CUSTOM_INPUT

logger = logging.getLogger(__name__)


def input_pattern(tool: CustomTool) -> str | None:
    """The anchored regex the tool's whole input must match; None for free text. Raises
    `UnsupportedSchemaError` (param "tools") saying why a grammar cannot be enforced."""
    if tool.syntax is None or not tool.definition:
        return None
    body = tool.definition if tool.syntax == "regex" else lark_to_regex(tool.definition)
    pattern = f"^(?:{body})$"
    try:
        validate_json_schema({"type": "string", "pattern": pattern}, param="tools")
    except UnsupportedSchemaError as e:
        raise UnsupportedSchemaError(f"custom tool {tool.name}'s {tool.syntax} grammar: {e.message}", "tools") from None
    return pattern


def grammar_tools(tools: list[dict[str, Any]], custom: list[CustomTool], *, forced: bool) -> list[dict[str, Any]]:
    """`tools` (template definitions) with each custom tool's `input` held to its grammar.

    A grammar that cannot be enforced: with a forced call (`forced`) that is an error (`UnsupportedSchemaError`,
    a 400 saying why); otherwise that tool's input stays free text, and a log line says why.
    """
    by_name = {t.name: t for t in custom}
    out = []
    for tool in tools:
        spec = by_name.get(tool["function"]["name"])
        pattern = None
        if spec is not None:
            try:
                pattern = input_pattern(spec)
            except UnsupportedSchemaError as e:
                if forced:
                    raise
                logger.info("custom tool %s: its input is not constrained (%s)", spec.name, e.message)
        if pattern is None:
            out.append(tool)
            continue
        held = copy.deepcopy(tool)
        parameters = held["function"]["parameters"]
        parameters["properties"][CUSTOM_INPUT]["pattern"] = pattern
        parameters["additionalProperties"] = False  # the input and nothing else
        out.append(held)
    return out
