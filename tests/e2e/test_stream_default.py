"""`defaults.stream: true` (the original's sample config) with the official openai client: a non-streaming
`create()` omits `stream` and must get a parsed response, not raw SSE; a client that asks for a stream with its
Accept header and no `stream` field gets one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import base_config
from tests.fixtures.cases import case_by_name
from tests.server_process import RouterServer

PLAIN = case_by_name("qwen", "plain")


@pytest.fixture(scope="module")
def stream_default_server(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterServer]:
    config = base_config(models_root, stream=True)
    with RouterServer(tmp_path_factory.mktemp("stream-default"), config) as srv:
        yield srv


def test_official_client_non_streaming_calls_get_json(stream_default_server: RouterServer) -> None:
    client = stream_default_server.openai()
    r = client.chat.completions.create(model="trained-qwen", messages=PLAIN.messages, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.content == PLAIN.content
    c = client.completions.create(model="trained-qwen", prompt="Hello", max_tokens=4, temperature=0)
    assert c.object == "text_completion" and c.usage.completion_tokens == 4
    # and streaming when asked, as always
    chunks = list(client.chat.completions.create(model="trained-qwen", messages=PLAIN.messages, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == PLAIN.content


def test_the_default_streams_to_a_client_that_accepts_a_stream(stream_default_server: RouterServer) -> None:
    url = stream_default_server.base_url + "/v1/chat/completions"
    body = {"model": "trained-qwen", "messages": PLAIN.messages, "temperature": 0}
    with httpx.stream("POST", url, json=body, headers={"Accept": "text/event-stream"}, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or "" for line in lines[:-1])
    assert text == PLAIN.content
    # curl's Accept: */* gets what OpenAI's API answers an omitted `stream`: JSON
    r2 = httpx.post(url, json=body, headers={"Accept": "*/*"}, timeout=30)
    assert r2.headers["content-type"].startswith("application/json") and r2.json()["object"] == "chat.completion"
