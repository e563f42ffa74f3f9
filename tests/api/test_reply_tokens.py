"""A chat's next turn, which sends the model's reply back as text, reuses the prefix cache through the reply:
the reply is encoded as the tokens the model generated, not as re-encoding its text would spell it."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from mlx_router.app import create_app
from tests.api.conftest import make_settings

QUESTIONS = ["tell me a story", "what is two plus two", "hello there", "list three colours", "why is the sky blue"]


def _reply(client: TestClient, body: dict, stream: bool) -> tuple[str, dict]:
    if not stream:
        r = client.post("/v1/chat/completions", json=body).json()
        return r["choices"][0]["message"]["content"], r["usage"]
    text, usage = "", {}
    opts = {"stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json={**body, **opts}) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for c in chunk["choices"]:
                text += c["delta"].get("content") or ""
    return text, usage


def _turns(models_root: Path, reuse: bool) -> list[tuple[int, int, int, int, int]]:
    """Per question: (turn 1's prompt tokens, its completion tokens, its reply re-encoded, turn 2's prompt
    tokens, turn 2's cached tokens). Replies sampled (seeded) from a random model are strings of random tokens,
    which re-encoding their text mostly spells otherwise. Odd questions stream their first turn."""
    tok = AutoTokenizer.from_pretrained(str(models_root / "tiny-a"))
    out = []
    with TestClient(create_app(make_settings(models_root, reuse_reply_tokens=reuse))) as client:
        for k, question in enumerate(QUESTIONS):
            msgs = [{"role": "system", "content": "a long system prompt " * 40}, {"role": "user", "content": question}]
            body = {"model": "tiny-a", "messages": msgs, "max_tokens": 24, "temperature": 1.0, "seed": 5}
            reply, u1 = _reply(client, body, stream=k % 2 == 1)
            msgs += [{"role": "assistant", "content": reply}, {"role": "user", "content": "and?"}]
            _, u2 = _reply(client, {**body, "messages": msgs, "max_tokens": 2}, stream=False)
            again = len(tok.encode(reply, add_special_tokens=False))
            cached = u2["prompt_tokens_details"]["cached_tokens"]
            out.append((u1["prompt_tokens"], u1["completion_tokens"], again, u2["prompt_tokens"], cached))
    return out


def test_the_next_turn_hits_the_cache_through_the_reply(models_root: Path) -> None:
    on, off = _turns(models_root, reuse=True), _turns(models_root, reuse=False)
    respelled = [i for i, (_, completion, again, _, _) in enumerate(on) if again != completion]
    assert len(respelled) >= 2, on  # the test means something only for replies that re-encode otherwise
    for prompt1, completion, _, _, cached in on:
        # Cut at max_tokens, the reply's last token has no KV yet: all else of turn 1 is cached.
        assert completion == 24
        assert cached == prompt1 + completion - 1, on
    for i in respelled:
        assert off[i][4] < on[i][4], (on, off)  # re-encoded, the reply left the cache where it was spelt anew
        assert off[i][3] != on[i][3]  # and the prompt's token count with it
