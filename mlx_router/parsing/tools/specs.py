"""The tools a request offers (names, argument schemas) and the check that a parsed call fits them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError


def function_specs(tools: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """name -> parameters schema, from OpenAI chat tools (`{"type": "function", "function": {...}}`).

    The flat Responses-API shape (`{"type": "function", "name": ..., "parameters": ...}`) is accepted too.
    A function without parameters takes an object of any shape.
    """
    specs: dict[str, dict[str, Any]] = {}
    for tool in tools or []:
        if not isinstance(tool, Mapping):
            continue
        function = tool.get("function", tool)
        name = function.get("name") if isinstance(function, Mapping) else None
        if isinstance(name, str) and name:
            parameters = function.get("parameters")
            specs[name] = dict(parameters) if isinstance(parameters, Mapping) else {"type": "object"}
    return specs


class ToolSpecs:
    """Decides whether a parsed call is a real call of one of the request's tools.

    Without tools any well-formed call is accepted (the caller did not say what exists), unless `any_name` is
    False: then nothing is a call (a request that offered no tools).
    """

    def __init__(self, tools: list[dict[str, Any]] | None, *, any_name: bool = True) -> None:
        self.schemas = function_specs(tools)
        self.any_name = any_name
        self._validators: dict[str, Any] = {}

    def known(self, name: str | None) -> bool:
        """Whether a call of `name` may be one (checked as soon as the name is read)."""
        return bool(name) and (name in self.schemas or (not self.schemas and self.any_name))

    def schema(self, name: str | None) -> dict[str, Any] | None:
        """The parameters schema of a tool, if the request declared it."""
        return self.schemas.get(name or "")

    def check(self, name: str | None, args: str | None) -> str | None:
        """Why (name, args) is not a valid call, or None when it is one."""
        if not name:
            return "no function name"
        if not self.known(name):
            return f"unknown function {name!r}"
        if args is None:
            return "no arguments"
        try:
            value = json.loads(args)
        except ValueError:
            return "arguments are not JSON"
        if not isinstance(value, dict):
            return "arguments are not a JSON object"
        validator = self._validator(name)
        if validator is None:
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        return None if error is None else f"arguments do not match the schema: {error.message}"

    def _validator(self, name: str) -> Any:
        if name not in self._validators:
            schema = self.schemas.get(name)
            validator = None
            if schema is not None:
                cls = jsonschema.validators.validator_for(schema)
                try:
                    cls.check_schema(schema)
                    validator = cls(schema)
                except SchemaError:
                    validator = None  # a broken schema is the client's problem: do not reject calls for it
            self._validators[name] = validator
        return self._validators[name]
