"""Any JSON body the request schema accepts gets a 2xx or a 4xx, never a 5xx (nor a stream that ends in a
server error): bodies are drawn by Hypothesis from the request models' own JSON schema, with strings that hold
lone surrogates and special tokens and integers of any size, and sent to the app in process.

More examples: `MLX_ROUTER_FUZZ_EXAMPLES=2000 python -m pytest -q tests/api/test_request_fuzz.py`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mlx_router.app import create_app
from mlx_router.protocol.anthropic import CountTokensRequest, MessagesRequest
from mlx_router.protocol.chat import ChatCompletionRequest
from mlx_router.protocol.completions import CompletionRequest
from mlx_router.protocol.responses import ResponsesRequest
from tests.api.conftest import make_settings
from tests.fixtures.tokenizers import FLAVOURS

EXAMPLES = int(os.environ.get("MLX_ROUTER_FUZZ_EXAMPLES", "60"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 100,  # the quick run is the same on every machine; a long run explores
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

# Strings: mostly short text, with the shapes that broke servers before (lone surrogates, special tokens,
# JSON and template syntax, NUL, non-BMP characters).
SPECIAL = [
    "\ud800",
    "a\udfffb",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</think>",
    "{{ x }}",
    "{%",
    '{"a": 1}',
    "\x00",
    "😀",
    "",
    " ",
]
TEXT = st.one_of(
    st.text(st.characters(max_codepoint=0x7F), max_size=10),
    st.text(max_size=8),  # any Unicode but surrogates
    st.sampled_from(SPECIAL),
)
EDGE_INTS = [-(2**63) - 1, -(2**63), -1, 0, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30]
INTS = st.one_of(st.integers(-3, 40), st.sampled_from(EDGE_INTS))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | INTS | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
# Output limits drawn as the schema allows, but mostly small: each accepted request generates for real.
SMALL_LIMITS = st.one_of(st.none(), st.integers(1, 6), st.sampled_from([4097, 2**31, 2**64]))
OVERRIDES: dict[str, st.SearchStrategy[Any]] = {
    # mostly one model; the others bring their templates and tool and reasoning parsers
    "model": st.sampled_from(["tiny-a"] * 6 + [f"trained-{f}" for f in FLAVOURS] + ["ghost", ""]),
    "max_tokens": SMALL_LIMITS,
    "max_completion_tokens": SMALL_LIMITS,
}


def from_schema(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that `schema` (the subset of JSON Schema pydantic writes) accepts."""
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, depth)
    if "anyOf" in schema or "oneOf" in schema:  # oneOf: a discriminated union (Anthropic's content blocks)
        return st.one_of([from_schema(s, defs, depth) for s in schema.get("anyOf") or schema["oneOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind is None:
        return JSON_VALUES
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        lo, hi = schema.get("minLength", 0), schema.get("maxLength")
        fits = [t for t in SPECIAL if len(t) >= lo and (hi is None or len(t) <= hi)]
        return st.one_of(st.text(min_size=lo, max_size=hi if hi is not None else lo + 10), st.sampled_from(fits))
    if kind in ("integer", "number"):
        return _numbers(schema, kind)
    if kind == "array":
        items = from_schema(schema.get("items", {}), defs, depth + 1)
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=3 if depth < 3 else 1)
    if kind == "object":
        return _objects(schema, defs, depth)
    raise AssertionError(f"schema type {kind!r} not covered")


def _numbers(schema: dict[str, Any], kind: str) -> st.SearchStrategy[Any]:
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    exclusive = "exclusiveMinimum" in schema
    hi = schema.get("maximum")

    def ok(x: float) -> bool:
        return (lo is None or x > lo or (x == lo and not exclusive)) and (hi is None or x <= hi)

    edges = [x for x in EDGE_INTS + [lo, hi] if x is not None and ok(x)]
    if kind == "integer":
        low = None if lo is None else int(lo) + (1 if exclusive else 0)
        inside = st.integers(low, hi) if low is not None and hi is not None else INTS.filter(ok)
        return st.one_of(st.integers(low, hi if hi is not None else (low or 0) + 40), st.sampled_from(edges), inside)
    floats = st.floats(lo, hi, exclude_min=exclusive, allow_nan=False, allow_infinity=False)
    return st.one_of(floats, st.sampled_from(edges)) if edges else floats


def _objects(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    props = schema.get("properties")
    if not props:
        extra = schema.get("additionalProperties", True)
        values = JSON_VALUES if extra is True else from_schema(extra, defs, depth + 1)
        return st.dictionaries(TEXT, values, max_size=3)
    required = set(schema.get("required", ()))
    fields = {
        name: OVERRIDES[name] if depth == 0 and name in OVERRIDES else from_schema(sub, defs, depth + 1)
        for name, sub in props.items()
    }
    return st.fixed_dictionaries(
        {k: v for k, v in fields.items() if k in required},
        optional={k: v for k, v in fields.items() if k not in required},
    )


def bodies(model: type) -> st.SearchStrategy[Any]:
    schema = model.model_json_schema()
    return from_schema(schema, schema.get("$defs", {}))


@pytest.fixture(scope="module")
def fuzz_client(models_root: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(models_root, timeout=60, cache_size=8))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _send(client: TestClient, path: str, body: Any) -> None:
    # ensure_ascii writes lone surrogates as \\ud800 escapes, as a client's JSON encoder would
    r = client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert r.status_code < 500, f"{r.status_code} {r.text[:300]} for {json.dumps(body)[:600]}"
    event(f"{r.status_code} {r.json()['error'].get('param') if r.status_code >= 400 else ''}")  # coverage report
    if r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"):
        for line in r.text.splitlines():
            if line.startswith("data: {") and '"error"' in line:
                error = json.loads(line[6:]).get("error")
                # OpenAI's envelope says server_error, Anthropic's api_error
                assert error is None or error["type"] not in ("server_error", "api_error"), (
                    f"{line} for {json.dumps(body)[:600]}"
                )
            if line.startswith("data: {") and '"response.failed"' in line:  # Responses' failure event
                failure = json.loads(line[6:])["response"]["error"]
                assert failure["code"] not in ("internal_error", "server_error"), f"{line} for {json.dumps(body)[:600]}"


@FUZZ_SETTINGS
@given(body=bodies(ChatCompletionRequest))
def test_chat_bodies_never_get_5xx(fuzz_client: TestClient, body: Any) -> None:
    _send(fuzz_client, "/v1/chat/completions", body)


@FUZZ_SETTINGS
@given(body=bodies(CompletionRequest))
def test_completion_bodies_never_get_5xx(fuzz_client: TestClient, body: Any) -> None:
    _send(fuzz_client, "/v1/completions", body)


@FUZZ_SETTINGS
@given(body=bodies(MessagesRequest), stream=st.booleans())
def test_anthropic_message_bodies_never_get_5xx(fuzz_client: TestClient, body: Any, stream: bool) -> None:
    if isinstance(body, dict):
        body["stream"] = stream
        if isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 6:
            # Anthropic's max_tokens is capped to the context, never refused (tests/e2e/test_anthropic_e2e.py): a
            # large one would run a random model to its context's end, slowly, and test nothing more here
            body["max_tokens"] = 6
    _send(fuzz_client, "/v1/messages", body)


@FUZZ_SETTINGS
@given(body=bodies(CountTokensRequest))
def test_anthropic_count_tokens_bodies_never_get_5xx(fuzz_client: TestClient, body: Any) -> None:
    _send(fuzz_client, "/v1/messages/count_tokens", body)


@FUZZ_SETTINGS
@given(body=bodies(ResponsesRequest), stream=st.booleans())
def test_responses_bodies_never_get_5xx(fuzz_client: TestClient, body: Any, stream: bool) -> None:
    if isinstance(body, dict):
        body["stream"] = stream
        limit = body.get("max_output_tokens")
        if isinstance(limit, int) and limit > 6:
            body["max_output_tokens"] = 6  # capped to the context, never refused: a large one only runs long
        elif "max_output_tokens" not in body:
            body["max_output_tokens"] = 6
    _send(fuzz_client, "/v1/responses", body)
