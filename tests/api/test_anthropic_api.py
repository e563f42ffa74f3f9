"""Anthropic Messages in process: every error under /v1/messages in Anthropic's envelope (validation, unknown
paths, wrong methods, body limits, keys, the core's refusals), both key headers, and `ping` events while the
model loads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlx_router.app import create_app
from mlx_router.config.settings import ModelSettings
from tests.api.conftest import make_settings

KEY = "sk-in-process"
# as Gemma's: roles alternate after an optional first system message, else the template raises
ALTERNATING = (
    "{%- if messages[0]['role'] == 'system' -%}{%- set rest = messages[1:] -%}{%- else -%}"
    "{%- set rest = messages -%}{%- endif -%}{%- for m in rest -%}"
    "{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "<{{ m['role'] }}>{{ m['content'] }}{%- endfor -%}<assistant>"
)


@pytest.fixture(scope="module")
def app(models_root: Path) -> Iterator[TestClient]:
    settings = make_settings(models_root, keepalive_seconds=0.01)
    settings.server.api_keys = [KEY]
    settings.server.max_body_mb = 0.01
    settings.models = {"tiny-b": ModelSettings(chat_template=ALTERNATING)}
    with TestClient(create_app(settings)) as client:
        yield client


def body(**fields: object) -> dict:
    return {"model": "tiny-a", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], **fields}


def anthropic_error(r, status: int, type_: str) -> str:
    assert r.status_code == status, r.text
    data = r.json()
    assert set(data) == {"type", "error"} and data["type"] == "error", data
    assert set(data["error"]) == {"type", "message"} and data["error"]["type"] == type_, data
    return data["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (body(max_tokens=None), "max_tokens"),
        (body(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "f"}]}]), "tool_use"),
        (body(tool_choice={"type": "tool"}), "name"),
        (
            body(tools=[{"name": "f", "input_schema": {"type": "object"}}], tool_choice={"type": "tool", "name": "g"}),
            "g",
        ),
        (body(model="no-such-model"), None),
    ],
)
def test_refusals_in_anthropics_envelope(app: TestClient, payload: dict, words: str | None) -> None:
    payload = {k: v for k, v in payload.items() if v is not None}
    r = app.post("/v1/messages?beta=true", json=payload, headers={"x-api-key": KEY})
    if payload["model"] == "no-such-model":
        message = anthropic_error(r, 404, "not_found_error")
        assert "no-such-model" in message and "defaults.model_aliases" in message
    else:
        assert words in anthropic_error(r, 400, "invalid_request_error")


def test_http_and_middleware_errors_in_anthropics_envelope(app: TestClient) -> None:
    headers = {"x-api-key": KEY}
    anthropic_error(app.post("/v1/messages", json=body()), 401, "authentication_error")
    anthropic_error(app.post("/v1/messages", json=body(), headers={"x-api-key": "wrong"}), 401, "authentication_error")
    anthropic_error(app.get("/v1/messages", headers=headers), 405, "invalid_request_error")
    anthropic_error(app.post("/v1/messages/nothing", json=body(), headers=headers), 404, "not_found_error")
    big = body(system="x" * 20_000)
    anthropic_error(app.post("/v1/messages", json=big, headers=headers), 413, "request_too_large")
    anthropic_error(app.post("/v1/messages", content=b"{", headers=headers), 400, "invalid_request_error")
    # the other APIs keep OpenAI's envelope
    assert app.post("/v1/chat/completions", json={}).json()["error"]["code"] == "invalid_api_key"


def test_both_key_headers_and_unknown_betas(app: TestClient) -> None:
    for headers in ({"x-api-key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        headers["anthropic-beta"] = "some-future-beta-2099-01-01,claude-code-20250219"
        r = app.post("/v1/messages/count_tokens?beta=true", json=body(), headers=headers)
        assert r.status_code == 200 and r.json()["input_tokens"] > 0


def test_pings_while_the_model_loads_then_the_stream(app: TestClient) -> None:
    r = app.post("/v1/messages", json=body(model="tiny-b", stream=True), headers={"x-api-key": KEY})
    assert r.status_code == 200
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and "ping" in names, names
    assert [n for n in names if n != "ping"][-2:] == ["message_delta", "message_stop"]
    pings = [json.loads(line[6:]) for line in r.text.splitlines() if line == 'data: {"type":"ping"}']
    assert pings and all(p == {"type": "ping"} for p in pings)


def test_system_text_inside_messages_folds_in_place_for_a_template_that_refuses_it(app: TestClient) -> None:
    headers = {"x-api-key": KEY}
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    inner = body(
        model="tiny-b", messages=[*turns, {"role": "system", "content": "rule"}, {"role": "user", "content": "c"}]
    )
    r = app.post("/v1/messages/count_tokens", json=inner, headers=headers)
    assert r.status_code == 200, r.text
    # the same as the reminder written into the user turn that follows it
    folded = body(
        model="tiny-b", messages=[*turns, {"role": "user", "content": "<system-reminder>\nrule\n</system-reminder>\nc"}]
    )
    assert r.json() == app.post("/v1/messages/count_tokens", json=folded, headers=headers).json()
    # a refusal for another reason stays a 400 in Anthropic's envelope
    bad = body(model="tiny-b", messages=[{"role": "assistant", "content": "x"}])
    assert "alternate" in anthropic_error(
        app.post("/v1/messages", json=bad, headers=headers), 400, "invalid_request_error"
    )
