"""Scheduling seen from outside: prefix cache, chunked prefill, queued cancellation, KV memory admission."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import base_config
from tests.server_process import RouterServer

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches".split()


def long_text(n_words: int, salt: str = "") -> str:
    return salt + " ".join(WORDS[k % len(WORDS)] for k in range(n_words))


def stream_ttft(client, prompt, **kw):
    """Time to the first text of a legacy completion (no template, no parser holding text back)."""
    t0 = time.perf_counter()
    ttft, text, usage = None, "", None
    for c in client.completions.create(
        model="tiny-a",
        prompt=prompt,
        stream=True,
        temperature=0,
        stream_options={"include_usage": True},
        **kw,
    ):
        if c.usage:
            usage = c.usage
        if c.choices and c.choices[0].text:
            ttft = ttft or time.perf_counter() - t0
            text += c.choices[0].text
    return ttft, text, usage


def test_second_turn_reuses_the_prefix(client):
    turn1 = long_text(1500, "prefix test. ")
    ttft1, reply, usage1 = stream_ttft(client, turn1, max_tokens=8, extra_body={"ignore_eos": True})
    assert usage1.prompt_tokens > 3000
    assert usage1.prompt_tokens_details.cached_tokens == 0
    ttft2, _, usage2 = stream_ttft(client, turn1 + reply + "\nand then?", max_tokens=8, extra_body={"ignore_eos": True})
    assert usage2.prompt_tokens_details.cached_tokens > 0.9 * usage1.prompt_tokens
    assert ttft2 < 0.5 * ttft1, (ttft1, ttft2)


def test_a_long_chats_next_turn_is_encoded_as_whole_and_hits_the_prefix(client, models_root):
    """Chat prompts are encoded stretch by stretch, long ones remembered: each turn's prompt still has exactly
    the tokens of encoding the whole conversation, and the next turn reuses the first one's cache."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(models_root / "tiny-a"))

    def whole(msgs):
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return len(tok.encode(text, add_special_tokens=False))

    msgs = [
        {"role": "system", "content": long_text(500, "system of the chat test. ")},
        {"role": "user", "content": long_text(900, "chat test. ")},
    ]
    extra = {"ignore_eos": True}
    r1 = client.chat.completions.create(model="tiny-a", messages=msgs, max_tokens=8, temperature=0, extra_body=extra)
    assert r1.usage.prompt_tokens == whole(msgs)
    # The reply comes back edited: a reply sent back unchanged is encoded as the model generated it
    # (`reuse_reply_tokens`, tests/api/test_reply_tokens.py), which need not be how its text encodes.
    edited = (r1.choices[0].message.content or "") + " (edited)"
    msgs += [{"role": "assistant", "content": edited}, {"role": "user", "content": "and?"}]
    r2 = client.chat.completions.create(model="tiny-a", messages=msgs, max_tokens=8, temperature=0, extra_body=extra)
    assert r2.usage.prompt_tokens == whole(msgs)
    assert r2.usage.prompt_tokens_details.cached_tokens > 0.9 * r1.usage.prompt_tokens


def test_long_prefill_does_not_stall_running_streams(client):
    """A 4k-token prompt arrives while a stream decodes: the stream keeps flowing between prefill chunks."""
    gaps: list[float] = []
    started = threading.Event()

    def decode():
        last = None
        for _c in client.chat.completions.create(
            model="tiny-a",
            messages=[{"role": "user", "content": "go"}],
            max_tokens=1500,
            stream=True,
            temperature=0,
            extra_body={"ignore_eos": True},
        ):
            now = time.perf_counter()
            if last is not None:
                gaps.append(now - last)
            last = now
            started.set()

    t = threading.Thread(target=decode)
    t.start()
    started.wait(30)
    time.sleep(0.2)
    ttft, _, _ = stream_ttft(client, long_text(1700, "stall test. "), max_tokens=2, extra_body={"ignore_eos": True})
    t.join()
    assert ttft is not None
    # with chunked prefill the stream waits for one chunk at a time, never for the whole prompt
    assert max(gaps) < 0.6 * ttft, (max(gaps), ttft)


def test_queued_request_dropped_when_its_client_leaves(models_root, tmp_path):
    cfg = base_config(models_root, max_running_requests=1, max_queued_requests=4)
    with RouterServer(tmp_path / "srv", cfg) as srv:
        client = srv.openai()
        body = dict(
            model="tiny-a",
            messages=[{"role": "user", "content": "long"}],
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        done = threading.Event()
        # long enough to outlast the checks below on a fast, idle machine
        runner = threading.Thread(target=lambda: (client.chat.completions.create(max_tokens=4000, **body), done.set()))
        runner.start()
        # the long request runs before the second is sent (a fixed sleep lost the race to the client's first call)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tiny = {m["id"]: m for m in srv.health()["models"]}.get("tiny-a")
            if tiny is not None and tiny["running"] == 1:
                break
            time.sleep(0.02)
        with httpx.stream(
            "POST",
            srv.base_url + "/v1/chat/completions",
            timeout=30,
            json={
                "model": "tiny-a",
                "messages": [{"role": "user", "content": "queued"}],
                "max_tokens": 50,
                "stream": True,
            },
        ) as r:
            assert r.status_code == 200
            time.sleep(0.3)
            models = {m["id"]: m for m in srv.health()["models"]}
            assert models["tiny-a"]["queued"] == 1 and models["tiny-a"]["running"] == 1
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            models = {m["id"]: m for m in srv.health()["models"]}
            if models["tiny-a"]["queued"] == 0:
                break
            time.sleep(0.05)
        assert models["tiny-a"]["queued"] == 0 and models["tiny-a"]["running"] == 1
        assert not done.is_set()  # the running request was not disturbed
        runner.join()
        assert done.is_set()


def test_kv_cache_counts_against_the_memory_budget(models_root, tmp_path):
    size = sum(p.stat().st_size for p in (models_root / "tiny-a").resolve().glob("*.safetensors"))
    budget_gb = size * 1.3 / 1024**3  # the weights (x1.2 safety margin) fit, a long KV cache does not
    cfg = base_config(models_root, memory_budget_gb=budget_gb, cache_size=1)
    with RouterServer(tmp_path / "srv", cfg) as srv:
        client = srv.openai()
        client.chat.completions.create(model="tiny-a", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(
                model="tiny-a", messages=[{"role": "user", "content": "hi"}], max_tokens=3000
            )
        assert e.value.status_code == 503 and e.value.body["code"] == "insufficient_memory"
        assert int(e.value.response.headers["retry-after"]) >= 1
        ok = client.chat.completions.create(model="tiny-a", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert ok.choices[0].finish_reason in ("length", "stop")
