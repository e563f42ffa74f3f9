"""The chat API through a real server and the official openai client: text, streaming, stops, seeds, usage."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.fixtures.cases import case_by_name

PLAIN = case_by_name("qwen", "plain")


def ask(client, model="trained-qwen", **kw):
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=kw.pop("messages", PLAIN.messages), **kw)


def test_non_stream_exact_answer(client):
    r = ask(client)
    assert r.choices[0].message.content == PLAIN.content
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens > 0
    assert r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.object == "chat.completion" and r.model == "trained-qwen"


def test_stream_matches_non_stream(client):
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == PLAIN.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_stream_wire_format(server):
    body = {"model": "trained-qwen", "messages": PLAIN.messages, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") or line.startswith(":") for line in lines)


@pytest.mark.parametrize("stop", ["France is", ["xyz", " of France"], "Paris."])
def test_stop_sequences_excluded(client, stop):
    full = PLAIN.content
    first = min(full.find(s) for s in ([stop] if isinstance(stop, str) else stop) if s in full)
    r = ask(client, stop=stop)
    assert r.choices[0].message.content == full[:first]
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(client, stop=stop, stream=True) if c.choices)
    assert streamed == full[:first]


def test_max_tokens_gives_length(client):
    r = ask(client, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    r = ask(client, max_completion_tokens=2)
    assert r.usage.completion_tokens == 2


def test_seed_reproducible(client):
    kw = dict(model="tiny-a", messages=[{"role": "user", "content": "hello"}], temperature=1.0, max_tokens=24)
    a = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    c = client.chat.completions.create(seed=8, **kw).choices[0].message.content
    assert a == b
    assert a != c


def test_text_parts_and_unknown_fields(client):
    msgs = [
        {"role": "system", "content": [{"type": "text", "text": PLAIN.messages[0]["content"]}]},
        {"role": "user", "content": [{"type": "text", "text": PLAIN.messages[1]["content"]}]},
    ]
    r = ask(client, messages=msgs, extra_body={"some_vendor_field": {"x": 1}})
    assert r.choices[0].message.content == PLAIN.content


def test_logprobs(client):
    r = ask(client, logprobs=True, top_logprobs=3, max_tokens=5)
    items = r.choices[0].logprobs.content
    assert len(items) == 5
    assert "".join(i.token for i in items) == r.choices[0].message.content
    for i in items:
        assert i.logprob <= 0 and len(i.top_logprobs) == 3
        assert i.top_logprobs[0].logprob >= i.top_logprobs[-1].logprob
        assert i.top_logprobs[0].token == i.token  # greedy picks the top token


def test_sampling_parameters_accepted(client):
    r = ask(
        client,
        model="tiny-a",
        temperature=0.8,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        max_tokens=8,
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1},
    )
    assert r.usage.completion_tokens == 8


def test_errors(client, server):
    with pytest.raises(openai.NotFoundError) as e:
        ask(client, model="no-such-model")
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, n=2)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError):
        ask(client, temperature=3)
    with pytest.raises(openai.BadRequestError):
        ask(client, messages=[])
    r = httpx.post(
        server.base_url + "/v1/chat/completions",
        content=b"{not json",
        timeout=10,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(server.base_url + "/v1/chat/completions", json={"model": "trained-qwen"}, timeout=10)
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_legacy_completions(client):
    r = client.completions.create(model="tiny-a", prompt="def hello", max_tokens=6, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 6
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="tiny-a", prompt="def hello", max_tokens=6, temperature=0, stream=True)
        if c.choices
    )
    assert streamed == r.choices[0].text
    echo = client.completions.create(model="tiny-a", prompt="def hello", max_tokens=6, temperature=0, echo=True)
    assert echo.choices[0].text == "def hello" + r.choices[0].text


def test_models_endpoint(client, server):
    ids = {m.id for m in client.models.list().data}
    assert {"tiny-a", "tiny-b", "trained-qwen"} <= ids
    m = client.models.retrieve("tiny-a")
    assert m.id == "tiny-a" and m.object == "model" and m.owned_by
    raw = httpx.get(server.base_url + "/v1/models", timeout=10).json()["data"]
    assert all("loaded" in x and "memory_estimate_gb" in x for x in raw)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_health_endpoints(server):
    assert httpx.get(server.base_url + "/health", timeout=5).json() == {"status": "ok"}
    h = server.health()
    assert h["status"] == "ok" and "memory" in h and "pressure" in h["memory"]
    assert "requests_in_flight" in h
    assert httpx.get(server.base_url + "/docs", timeout=5).status_code == 200
    json.loads(httpx.get(server.base_url + "/openapi.json", timeout=5).text)
