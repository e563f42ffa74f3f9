"""Constrained decoding: grammars for `response_format` and `tool_choice`, compiled by llguidance.

Grammar building here is pure Python; the logits processor that applies a grammar's token mask to MLX logits
lives in `mlx_router.core.constrained`.
"""

from mlx_router.constraints.errors import ConstraintError, InvalidGrammarError, UnsupportedSchemaError
from mlx_router.constraints.grammars import (
    grammar_from_lark,
    json_schema_grammar,
    lark_json,
    response_format_grammar,
    response_format_schema,
    validate_json_schema,
)

__all__ = [
    "ConstraintError",
    "InvalidGrammarError",
    "UnsupportedSchemaError",
    "grammar_from_lark",
    "json_schema_grammar",
    "lark_json",
    "response_format_grammar",
    "response_format_schema",
    "validate_json_schema",
]
