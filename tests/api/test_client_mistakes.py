"""Client mistakes that used to reach the engine and come back as 500s are 400s at the protocol edge, with the
field named: seeds outside 64 bits, lone surrogates in any text, chat_template_kwargs that name the server's own
template arguments. Streamed requests get the same 400 before any byte of the stream."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

CHAT = "/v1/chat/completions"


def chat(**kw: object) -> dict:
    body: dict = {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    body.update(kw)
    return body


def post_raw(client: TestClient, path: str, body: dict):
    # json.dumps escapes a lone surrogate as \\ud800, as any client's JSON encoder does
    return client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def assert_400(r, param: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param, err


@pytest.mark.parametrize("seed", [-1, -(2**63), 2**64, 2**70])
@pytest.mark.parametrize("stream", [False, True])
def test_seed_outside_64_bits_is_400(app_client: TestClient, seed: int, stream: bool) -> None:
    assert_400(app_client.post(CHAT, json=chat(seed=seed, stream=stream)), "seed")
    assert_400(app_client.post("/v1/completions", json={"model": "tiny-a", "prompt": "x", "seed": seed}), "seed")


@pytest.mark.parametrize("seed", [0, 2**63, 2**64 - 1])
def test_seeds_of_64_bits_are_served(app_client: TestClient, seed: int) -> None:
    r = app_client.post(CHAT, json=chat(seed=seed, temperature=1.0))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "body, path, param",
    [
        (chat(messages=[{"role": "user", "content": "a\ud800b"}]), CHAT, "messages.0.content"),
        (
            chat(messages=[{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]),
            CHAT,
            "messages.0.content.0.text",
        ),
        (chat(stop=["x", "\udc00"]), CHAT, "stop.1"),
        (chat(chat_template_kwargs={"k\ud800": 1}), CHAT, "chat_template_kwargs.k\\ud800"),
        (chat(stream=True, messages=[{"role": "system", "content": "\ud800"}]), CHAT, "messages.0.content"),
        ({"model": "tiny-a", "prompt": "a\ud800b"}, "/v1/completions", "prompt"),
        ({"model": "tiny-a", "prompt": ["\ud800"]}, "/v1/completions", "prompt.0"),
        ({"model": "tiny-a", "input": ["ok", "\ud800"]}, "/v1/embeddings", "input.1"),
        ({"model": "tiny-a", "input": "a\ud800"}, "/v1/responses", "input"),
    ],
)
def test_lone_surrogates_are_400(app_client: TestClient, body: dict, path: str, param: str) -> None:
    assert_400(post_raw(app_client, path, body), param)


def test_paired_surrogates_are_text(app_client: TestClient) -> None:
    # "\ud83d\ude00" in JSON is one character (an emoji): valid, served
    r = post_raw(app_client, CHAT, chat(messages=[{"role": "user", "content": "smile \U0001f600"}]))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("key", ["add_generation_prompt", "tools", "messages", "tokenize"])
@pytest.mark.parametrize("stream", [False, True])
def test_reserved_template_kwargs_are_400(app_client: TestClient, key: str, stream: bool) -> None:
    r = app_client.post(CHAT, json=chat(chat_template_kwargs={key: True}, stream=stream))
    assert_400(r, "chat_template_kwargs")
    assert key in r.json()["error"]["message"]


def test_other_template_kwargs_reach_the_template(app_client: TestClient) -> None:
    r = app_client.post(CHAT, json=chat(chat_template_kwargs={"enable_thinking": False, "anything": [1, 2]}))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("stream", [False, True])
def test_impossible_tokens_have_finite_logprobs(app_client: TestClient, stream: bool) -> None:
    # Found by the fuzzer (test_request_fuzz.py): a near-zero repetition penalty drives logits to infinity,
    # and a -inf log-probability is not JSON (500 before; streams wrote "-Infinity").
    extreme = {"repetition_penalty": 1.5e-199, "max_tokens": 3, "stream": stream}
    r1 = app_client.post("/v1/completions", json={"model": "tiny-a", "prompt": "0 0 0", "logprobs": 2, **extreme})
    r2 = app_client.post(CHAT, json=chat(logprobs=True, top_logprobs=2, **extreme))
    for r in (r1, r2):
        assert r.status_code == 200, r.text
        bodies = [line[6:] for line in r.text.splitlines() if line.startswith("data: {")] if stream else [r.text]
        assert bodies
        for text in bodies:
            json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in {text}"))
