"""Structured output through a real server and the official openai client: `response_format` json_object and
json_schema are enforced by constrained decoding, streamed or not, greedy or sampled, for requests that share
a batch with different schemas, and after a model's thinking; a schema that cannot be enforced is a 400."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import openai
import pytest

from tests.e2e.test_tools_e2e import SAMPLINGS, Answer, ask, ask_stream, case_request
from tests.fixtures.cases import REASONING, case_by_name

# Random models write whatever the grammar allows: bounded strings and arrays keep every answer finite.
PERSON = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "age", "role", "tags", "address"],
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 5}},
        "address": {
            "type": "object",
            "additionalProperties": False,
            "required": ["city"],
            "properties": {
                "city": {"type": "string", "maxLength": 8},
                "zip": {"type": "integer", "minimum": 1000, "maximum": 99999},
            },
        },
    },
}
ORDER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["items", "paid"],
    "properties": {
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 2,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["sku", "qty"],
                "properties": {
                    "sku": {"enum": ["A1", "B2", "C3"]},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 9},
                },
            },
        },
        "paid": {"type": "boolean"},
        "note": {"type": ["string", "null"], "maxLength": 6},
    },
}
VERDICT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["verdict", "score"],
    "properties": {
        "verdict": {"enum": ["yes", "no", "maybe"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
SCHEMAS = {"person": PERSON, "order": ORDER, "verdict": VERDICT}
ASK_JSON = [{"role": "user", "content": "Answer in JSON."}]


def json_schema_format(name: str) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True}}


def _run(client: Any, run: tuple[str, float, int | None, bool, str]) -> Answer:
    model, temperature, seed, stream, fmt = run
    response_format = {"type": "json_object"} if fmt == "object" else json_schema_format(fmt)
    req = dict(messages=ASK_JSON, response_format=response_format, temperature=temperature, seed=seed, max_tokens=600)
    return ask_stream(client, model, **req) if stream else ask(client, model, **req)


def test_json_schema_in_one_batch_streamed_and_not(client: Any) -> None:
    # every (model, sampling, stream) run gets one of the schemas, all sent at once: rows of one batch
    # decode under different grammars
    names = list(SCHEMAS)
    runs = [
        (model, t, seed, stream) for model in ("tiny-a", "tiny-b") for t, seed in SAMPLINGS for stream in (False, True)
    ]
    runs_with = [(*run, names[i % len(names)]) for i, run in enumerate(runs)]
    with ThreadPoolExecutor(len(runs_with)) as pool:
        answers = list(pool.map(lambda run: _run(client, run), runs_with))
    for run, answer in zip(runs_with, answers, strict=True):
        assert answer.finish_reason == "stop", (run, answer)
        assert answer.calls == []
        jsonschema.validate(json.loads(answer.content or ""), SCHEMAS[run[-1]])


def test_json_object_is_an_object_whenever_the_model_finishes(client: Any) -> None:
    # json_object bounds nothing: a random model may write one string until max_tokens; whatever it
    # finishes is one JSON object, and its text is JSON from the first character
    runs = [
        (model, t, seed, stream, "object")
        for model in ("tiny-a", "tiny-b")
        for t, seed in [(1.0, 11), (1.0, 14), (1.0, 15)]
        for stream in (False, True)
    ]
    with ThreadPoolExecutor(len(runs)) as pool:
        answers = list(pool.map(lambda run: _run(client, run), runs))
    finished = 0
    for run, answer in zip(runs, answers, strict=True):
        assert (answer.content or "").startswith("{"), (run, answer)
        if answer.finish_reason == "stop":
            assert isinstance(json.loads(answer.content or ""), dict), (run, answer)
            finished += 1
    assert finished >= len(runs) // 2, answers


@pytest.mark.parametrize("flavour", ["qwen", "deepseek_v3", "harmony"])
def test_thinking_comes_first_then_the_json(client: Any, flavour: str) -> None:
    # the grammar leaves the thinking free (the trained model writes its case's reasoning exactly) and
    # forces the answer after it: into content, in the format's answer channel
    case = case_by_name(flavour, "reasoning")
    req = case_request(case, response_format=json_schema_format("verdict"), max_tokens=300)
    for answer in (ask(client, f"trained-{flavour}", **req), ask_stream(client, f"trained-{flavour}", **req)):
        assert answer.reasoning == REASONING, answer
        assert answer.finish_reason == "stop"
        jsonschema.validate(json.loads(answer.content or ""), VERDICT)


def test_a_trained_model_answers_in_json(client: Any) -> None:
    for flavour in ("qwen", "llama3", "mistral"):
        case = case_by_name(flavour, "plain")
        answer = ask(
            client,
            f"trained-{flavour}",
            **case_request(case, response_format=json_schema_format("person"), max_tokens=300),
        )
        assert answer.finish_reason == "stop"
        jsonschema.validate(json.loads(answer.content or ""), PERSON)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        {"type": "object", "properties": {"a": {"not": {"type": "string"}}}},
        {"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}},
        {"type": "array", "contains": {"type": "integer"}},
        {"type": "string", "format": "uri-reference"},
    ],
)
def test_unsupported_schema_is_a_400(client: Any, schema: dict[str, Any]) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(
                model="tiny-a", messages=ASK_JSON, response_format=fmt, max_tokens=4, stream=stream
            )
        assert e.value.body["param"] == "response_format", e.value.body
