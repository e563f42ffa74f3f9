"""Errors raised while building or compiling a constraint.

Both are `ValueError`s that carry the request field at fault (`param`), so the API maps them to HTTP 400 with
`{"error": {"message", "type": "invalid_request_error", "param", "code"}}`.
"""

from __future__ import annotations


class ConstraintError(ValueError):
    """A constraint asked for by a request cannot be enforced."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UnsupportedSchemaError(ConstraintError):
    """A JSON schema is invalid, or uses a feature the grammar engine cannot enforce.

    Raised instead of ignoring the feature: users rely on `response_format` being honoured, so an output that
    silently breaks the schema is worse than a 400 that names the keyword.
    """

    def __init__(self, message: str, param: str | None = "response_format") -> None:
        super().__init__(message, param)


class InvalidGrammarError(ConstraintError):
    """A grammar (Lark text, or one built from a schema) does not compile against the model's tokenizer."""
