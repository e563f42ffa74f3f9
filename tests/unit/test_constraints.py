"""Grammars for `response_format` and tool calls: what is enforced, what is refused, how it is reported."""

from __future__ import annotations

import json
import subprocess
import sys

import pydantic
import pytest

from mlx_router.constraints.errors import UnsupportedSchemaError
from mlx_router.constraints.grammars import (
    JSON_WHITESPACE,
    grammar_from_lark,
    json_schema_grammar,
    lark_json,
    response_format_grammar,
    response_format_schema,
    validate_json_schema,
)

OBJ = {"type": "object", "properties": {"a": {"type": "string"}}}

SUPPORTED = {
    "empty": {},
    "true": True,
    "nested": {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}},
        "required": ["a"],
    },
    "array bounds": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
    "enum": {"enum": ["a", "b", 1, None, {"x": [1]}]},
    "const": {"const": {"a": [1, {"b": None}]}},
    "anyOf": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    "oneOf disjoint types": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    "oneOf tagged": {
        "oneOf": [
            {"type": "object", "properties": {"k": {"const": "a"}}, "required": ["k"]},
            {"type": "object", "properties": {"k": {"const": "b"}}, "required": ["k"]},
        ]
    },
    "allOf": {"allOf": [OBJ, {"required": ["a"]}]},
    "$defs ref": {
        "$defs": {"x": {"type": "string"}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/x"}},
    },
    "definitions ref": {
        "definitions": {"x": {"type": "string"}},
        "properties": {"a": {"$ref": "#/definitions/x"}},
    },
    "recursive ref": {
        "$defs": {"n": {"type": "object", "properties": {"c": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}},
        "$ref": "#/$defs/n",
    },
    "pattern": {"type": "string", "pattern": "^[a-z]+$"},
    "formats": {
        "anyOf": [
            {"type": "string", "format": f}
            for f in (
                "date-time",
                "time",
                "date",
                "duration",
                "email",
                "hostname",
                "ipv4",
                "ipv6",
                "uuid",
                "uri",
            )
        ]
    },
    "numeric bounds": {
        "type": "number",
        "minimum": 0,
        "maximum": 10,
        "exclusiveMinimum": 0,
        "multipleOf": 0.5,
    },
    "draft-4 exclusive bound": {"type": "number", "minimum": 1, "exclusiveMinimum": True},
    "additionalProperties false": {**OBJ, "additionalProperties": False},
    "additionalProperties schema": {"type": "object", "additionalProperties": {"type": "integer"}},
    "required": {**OBJ, "required": ["a", "b"]},
    "string lengths": {"type": "string", "minLength": 2, "maxLength": 5},
    "prefixItems": {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"type": "integer"}],
        "items": False,
    },
    "type list": {"type": ["string", "null"]},
    "patternProperties": {"type": "object", "patternProperties": {"^a": {"type": "string"}}},
    "maxProperties map": {"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 2},
    "annotations": {
        "type": "object",
        "title": "T",
        "description": "d",
        "examples": [{}],
        "default": {},
        "$comment": "c",
        "deprecated": True,
        "readOnly": True,
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:x",
        "x-custom": 1,
    },
}

UNSUPPORTED = {  # name: (schema, words the error must contain)
    "uniqueItems": ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    "uniqueItems false": ({"type": "array", "uniqueItems": False}, "uniqueItems"),
    "contains": ({"type": "array", "contains": {"type": "integer"}}, "contains"),
    "minContains": ({"type": "array", "contains": {}, "minContains": 2}, "minContains"),
    "not": ({"not": {"type": "string"}}, "not"),
    "if/then/else": ({"if": {"type": "string"}, "then": {"minLength": 1}, "else": {}}, "if"),
    "dependentRequired": ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired"),
    "dependentSchemas": ({"type": "object", "dependentSchemas": {"a": {}}}, "dependentSchemas"),
    "dependencies": ({"type": "object", "dependencies": {"a": ["b"]}}, "dependencies"),
    "propertyNames": ({"type": "object", "propertyNames": {"pattern": "^a"}}, "propertyNames"),
    "unevaluatedProperties": ({"type": "object", "unevaluatedProperties": False}, "unevaluatedProperties"),
    "unevaluatedItems": ({"type": "array", "unevaluatedItems": False}, "unevaluatedItems"),
    "$dynamicRef": ({"$dynamicRef": "#x"}, "$dynamicRef"),
    "remote $ref": ({"$ref": "https://example.com/s.json"}, "example.com"),
    "missing $ref": ({"$ref": "#/$defs/nope"}, "nope"),
    "overlapping oneOf": ({"oneOf": [{"type": "number"}, {"type": "integer"}]}, "oneOf"),
    "lookahead pattern": ({"type": "string", "pattern": "^(?=a)[a-z]+$"}, "look-around"),
    "backreference pattern": ({"type": "string", "pattern": "^(a)\\1$"}, "backreferences"),
    "unknown format": ({"type": "string", "format": "uri-reference"}, "uri-reference"),
    "pydantic password format": ({"type": "string", "format": "password"}, "password"),
    "minProperties with optional keys": ({**OBJ, "minProperties": 1}, "min/maxProperties"),
    "false schema": (False, "must be an object"),
    "unsatisfiable": ({**OBJ, "required": ["b"], "additionalProperties": False}, "Unsatisfiable"),
    "bad type": ({"type": "foo"}, "foo"),
    "not a schema": ([1, 2], "must be an object"),
    "lenient smuggled in": (
        {"x-guidance": {"lenient": True}, "type": "array", "uniqueItems": True},
        "uniqueItems",
    ),
}


@pytest.mark.parametrize("schema", SUPPORTED.values(), ids=SUPPORTED.keys())
def test_supported_schemas_compile(schema):
    grammar = response_format_grammar({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert grammar and json.loads(grammar)["grammars"]
    validate_json_schema(schema)


@pytest.mark.parametrize(("schema", "words"), UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_schemas_are_400s_that_name_the_problem(schema, words):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    with pytest.raises(UnsupportedSchemaError) as caught:
        response_format_grammar(fmt)
    assert isinstance(caught.value, ValueError)
    assert caught.value.param == "response_format"
    assert words in caught.value.message and str(caught.value) == caught.value.message


@pytest.mark.parametrize("think", [None, ("<think>", "</think>"), (7, 8)])
def test_unsupported_schemas_are_refused_with_a_reasoning_prefix_too(think):
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}},
    }
    with pytest.raises(UnsupportedSchemaError, match="uniqueItems"):
        response_format_grammar(fmt, think=think)


def test_text_and_missing_formats_need_no_grammar():
    assert response_format_grammar(None) is None
    assert response_format_grammar({"type": "text"}) is None
    assert response_format_grammar({"type": "text"}, think=("<think>", "</think>")) is None


def test_json_object_and_schemaless_json_schema_mean_any_object():
    assert response_format_schema({"type": "json_object"}) == {"type": "object"}
    assert response_format_schema({"type": "json_schema", "json_schema": {"name": "x"}}) == {"type": "object"}
    assert response_format_grammar({"type": "json_object"}) == json_schema_grammar({"type": "object"})


@pytest.mark.parametrize(
    ("fmt", "param"),
    [
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format"),
        ({"type": "json_schema", "json_schema": "nope"}, "response_format.json_schema"),
        ("json", "response_format"),
    ],
)
def test_malformed_response_formats(fmt, param):
    with pytest.raises(UnsupportedSchemaError) as caught:
        response_format_grammar(fmt)
    assert caught.value.param == param


def test_pydantic_wire_types_are_read_by_their_openai_names():
    class JsonSchema(pydantic.BaseModel):
        name: str
        schema_: dict | None = pydantic.Field(default=None, alias="schema")
        strict: bool | None = None

    class ResponseFormat(pydantic.BaseModel):
        type: str
        json_schema: JsonSchema | None = None

    fmt = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "x", "schema": OBJ}})
    assert response_format_schema(fmt) == OBJ
    assert response_format_grammar(fmt) == json_schema_grammar(OBJ)


def test_compile_options_are_ours_but_whitespace_can_be_chosen():
    def options(schema):
        return json.loads(json_schema_grammar(schema))["grammars"][0]["json_schema"]["x-guidance"]

    assert options(OBJ) == {"whitespace_pattern": JSON_WHITESPACE, "lenient": False, "coerce_one_of": False}
    compact = {**OBJ, "x-guidance": {"whitespace_flexible": False, "lenient": True, "coerce_one_of": True}}
    assert options(compact) == {"whitespace_flexible": False, "lenient": False, "coerce_one_of": False}
    assert "x-guidance" not in OBJ  # the caller's schema is not modified


def test_lark_json_fragment_for_tool_arguments():
    fragment = lark_json(OBJ)
    assert fragment.startswith("%json {") and json.loads(fragment[len("%json ") :])["properties"] == OBJ["properties"]
    with pytest.raises(UnsupportedSchemaError) as caught:
        lark_json({"type": "object", "not": {}})
    assert caught.value.param == "tools"
    with pytest.raises(UnsupportedSchemaError) as caught:
        validate_json_schema({"not": {}}, param="tools[0].function.parameters")
    assert caught.value.param == "tools[0].function.parameters"


def test_reasoning_prefix_lark_shapes():
    fmt = {"type": "json_object"}
    lark = response_format_grammar(fmt, think=("<think>", "</think>"))
    assert lark and lark.startswith("start: (<think> THINK_TEXT? </think>")
    assert "answer: %json {" in lark
    opened = response_format_grammar(fmt, think=(5, 6), in_reasoning=True)
    assert opened and opened.startswith("start: THINK_TEXT? <[6]>")
    text = response_format_grammar(fmt, think=("[T]", "[/T]"), tags_are_tokens=False)
    assert text and 'suffix="[/T]"' in text
    with pytest.raises(ValueError, match="token id"):
        response_format_grammar(fmt, think=("[THINK]", "[/THINK]"))


def test_grammar_from_lark_passes_text_through_unchecked():
    # special tokens can only be checked against a tokenizer: ConstraintCompiler.processor does it
    assert grammar_from_lark('start: "a" <tool_call>') == 'start: "a" <tool_call>'


def test_constraints_package_never_imports_mlx():
    code = (
        "import sys, mlx_router.constraints.grammars, mlx_router.constraints.errors; "
        "print(any(m == 'mlx' or m.startswith('mlx.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
