"""/v1/responses in process: errors in OpenAI's envelope (400s naming the field, 404), hosted tools skipped, the
response store's limits, and a failure mid-stream ending the stream with `response.failed` in sequence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mlx_router.app import create_app
from mlx_router.protocol.responses import ResponsesRequest
from tests.api.conftest import make_settings
from tests.api.test_api_inprocess import assert_error

URL = "/v1/responses"


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "tiny-a", "input": "hi", "max_output_tokens": 4, "temperature": 0, **kw}


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        if block.startswith("event: "):
            name, data = block.split("\n", 1)
            events.append((name[len("event: ") :], json.loads(data[len("data: ") :])))
    return events


@pytest.fixture(scope="module")
def client(models_root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(models_root, responses_store_size=1))) as c:
        yield c


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        ({"input": None}, "input", None),
        ({"input": [{"role": "tool", "content": "x"}]}, "input.0.message.role", None),
        ({"max_output_tokens": 0}, "max_output_tokens", None),
        ({"background": True}, "background", "background"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice", "not supported"),
        (
            {"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}},
            "tool_choice",
            "not in tools",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
            "input.0.content.0.image_url",
            "data: URI",
        ),
        ({"previous_response_id": "resp_nope"}, "previous_response_id", "no response"),
        (
            {
                "tools": [
                    {
                        "type": "custom",
                        "name": "t",
                        "format": {"type": "grammar", "syntax": "lark", "definition": 'start: t\nt: "(" t ")"'},
                    }
                ],
                "tool_choice": {"type": "custom", "name": "t"},
            },
            "tools",
            "refers to itself",
        ),
    ],
)
def test_invalid_requests_are_400s_naming_the_field(
    client: TestClient, change: dict, param: str, words: str | None
) -> None:
    sent = {k: v for k, v in body(**change).items() if v is not None}  # None: the field left out
    err = assert_error(client.post(URL, json=sent), 400, "invalid_request_error", param=param)
    if words:
        assert words in err["message"]


def test_unknown_model_is_a_404(client: TestClient) -> None:
    assert_error(client.post(URL, json=body(model="ghost")), 404, code="model_not_found", param="model")


def test_hosted_tools_are_skipped(client: TestClient) -> None:
    hosted = [
        {"type": "web_search"},
        {"type": "file_search", "vector_store_ids": ["vs"]},
        {"type": "computer_use_preview"},
    ]
    hosted += [{"type": "mcp", "server_label": "x", "server_url": "https://example.com"}, {"type": "local_shell"}]
    r = client.post(URL, json=body(tools=hosted))
    assert r.status_code == 200, r.text
    assert r.json()["tools"] == hosted  # echoed as sent


def test_the_store_keeps_only_the_most_recent(client: TestClient) -> None:
    first = client.post(URL, json=body()).json()["id"]
    assert client.post(URL, json=body(previous_response_id=first)).status_code == 200
    # the follow-up took the only place: the first is gone
    err = assert_error(client.post(URL, json=body(previous_response_id=first)), 400, param="previous_response_id")
    assert err["code"] == "previous_response_not_found"
    unstored = client.post(URL, json=body(store=False)).json()
    assert unstored["store"] is False
    assert_error(client.post(URL, json=body(previous_response_id=unstored["id"])), 400, param="previous_response_id")


def test_no_store_at_all(models_root: Path) -> None:
    with TestClient(create_app(make_settings(models_root, responses_store_size=0))) as c:
        err = assert_error(c.post(URL, json=body(previous_response_id="resp_1")), 400, param="previous_response_id")
        assert "keeps no responses" in err["message"]


def test_a_failure_mid_stream_ends_with_response_failed(models_root: Path) -> None:
    with TestClient(create_app(make_settings(models_root, timeout=2, max_tokens=4000))) as c:
        c.post(URL, json=body(max_output_tokens=1))  # loads the model (within the timeout or not)
        r = c.post(URL, json=body(max_output_tokens=4000, stream=True))
        assert r.status_code == 200
        events = sse(r.text)
        assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
        name, last = events[-1]
        assert name == "response.failed" and last["response"]["status"] == "failed"
        assert last["response"]["error"]["code"] == "timeout"
        assert "timeout" in last["response"]["error"]["message"]


def test_a_codex_turn_reaches_the_prompt_whole(client: TestClient) -> None:
    """The recorded Codex turn as the model sees it: instructions first, every history item in place (the
    apply_patch call as the function call of one `input` the template knows), hosted tools left out, and the
    call grammar holding apply_patch's input to its Lark grammar."""
    recorded = json.loads((Path(__file__).parents[1] / "fixtures" / "requests" / "codex_turn.json").read_text())
    request = ResponsesRequest.model_validate({**recorded, "model": "trained-qwen"})
    services = client.app.state.services  # type: ignore[attr-defined]
    prepared = client.portal.call(services.preparer.prepare, request.to_conversation())  # type: ignore[union-attr]
    prompt = prepared.prompt_text
    order = [
        "You are Codex",
        "<permissions instructions>",
        "<environment_context>",
        "Add a hello.txt file",
        '"command": ["ls"]',
        "README.md\nsrc",
        '"input": "*** Begin Patch\\n*** Add File: hello.txt\\n+hi\\n*** End Patch\\n"',
        "Success. Updated the following files",
        "Added hello.txt.",
        "Now change it to say hello.",
    ]
    places = [prompt.find(text) for text in order]
    assert -1 not in places and places == sorted(places), dict(zip(order, places, strict=True))
    assert '"name": "apply_patch"' in prompt and '"name": "shell"' in prompt and "web_search" not in prompt
    assert "Begin Patch" in (prepared.generation.grammar or "")  # constrain_tool_calls: the patch's grammar
