"""Typed values from the text of XML-style parameters (`<parameter=P>\\nVALUE\\n</parameter>`).

The model writes every value as text; the tool's JSON schema says what it is. A value that does not convert
stays a string, and the schema check then rejects the call if a string was not allowed.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

_INTEGER = re.compile(r"[-+]?\d+")
_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}


def schema_types(schema: Mapping[str, Any]) -> list[str]:
    """The JSON types a schema allows, in the order it lists them (`type`, then anyOf/oneOf members)."""
    declared = schema.get("type")
    types = [declared] if isinstance(declared, str) else list(declared or [])
    for key in ("anyOf", "oneOf", "allOf"):
        for member in schema.get(key) or []:
            if isinstance(member, Mapping):
                types += [t for t in schema_types(member) if t not in types]
    if not types and "enum" in schema:
        types = list(dict.fromkeys(_JSON_TYPES.get(type(v), "string") for v in schema["enum"]))
    if not types and "properties" in schema:
        types = ["object"]
    if not types and "items" in schema:
        types = ["array"]
    return types


def _integer(text: str) -> tuple[bool, Any]:
    return (True, int(text)) if _INTEGER.fullmatch(text) else (False, None)


def _number(text: str) -> tuple[bool, Any]:
    if _INTEGER.fullmatch(text):
        return True, int(text)
    try:
        value = float(text)
    except ValueError:
        return False, None
    return (True, value) if math.isfinite(value) else (False, None)


def _boolean(text: str) -> tuple[bool, Any]:
    lowered = text.lower()
    return (True, lowered == "true") if lowered in ("true", "false") else (False, None)


def _container(kind: type) -> Callable[[str], tuple[bool, Any]]:
    def convert(text: str) -> tuple[bool, Any]:
        try:
            value = json.loads(text)
        except ValueError:
            try:  # models trained on Python sometimes write {'a': 1} or True
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return False, None
        return (True, value) if isinstance(value, kind) else (False, None)

    return convert


_CONVERTERS: dict[str, Callable[[str], tuple[bool, Any]]] = {
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "object": _container(dict),
    "array": _container(list),
}


def convert_value(text: str, schema: Mapping[str, Any] | None) -> Any:
    """The value a parameter's text stands for, given the property's schema (None: keep the text)."""
    if not schema:
        return text
    types = schema_types(schema)
    stripped = text.strip()
    if "null" in types and stripped.lower() in ("null", "none"):
        return None
    for kind in types:
        if kind == "string":
            return text
        converter = _CONVERTERS.get(kind)
        if converter is not None:
            ok, value = converter(stripped)
            if ok:
                return value
    return text


def property_schema(schema: Mapping[str, Any] | None, name: str) -> Mapping[str, Any] | None:
    """The schema of one property of a tool's parameters, if declared."""
    properties = (schema or {}).get("properties")
    if isinstance(properties, Mapping):
        found = properties.get(name)
        return found if isinstance(found, Mapping) else None
    return None
