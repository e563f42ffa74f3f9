"""Prompts over the context are refused before tokenizing (by the token floor), and prompts that fit are never
refused by it: the floor only ever refuses what tokenizing would have refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fastapi.testclient import TestClient

CHAT = "/v1/chat/completions"
PROSE = Path(json.__file__).read_text(encoding="utf-8")  # ~14,000 characters of English and code


def test_a_megabyte_prompt_is_refused_by_its_floor(app_client: TestClient) -> None:
    big = PROSE * 80  # ~1.1 MB, over 250,000 tokens for a 4,096-token model
    t0 = time.monotonic()
    for path, body in (
        (CHAT, {"model": "tiny-a", "messages": [{"role": "user", "content": big}]}),
        ("/v1/completions", {"model": "tiny-a", "prompt": big}),
    ):
        r = app_client.post(path, json=body)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "context_length_exceeded" and "at least" in err["message"], err
    assert time.monotonic() - t0 < 5


def test_prompts_that_fit_are_served(app_client: TestClient) -> None:
    # near the 4,096-token context: the floor is computed (the text is long) but stays under it
    text = PROSE[:9000]
    r = app_client.post(
        CHAT, json={"model": "tiny-a", "messages": [{"role": "user", "content": text}], "max_tokens": 2}
    )
    assert r.status_code == 200, r.text
    assert 1000 < r.json()["usage"]["prompt_tokens"] < 4096


def test_too_many_token_ids_are_refused_before_they_are_read(app_client: TestClient) -> None:
    r = app_client.post("/v1/completions", json={"model": "tiny-a", "prompt": [1] * 5000, "max_tokens": 2})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "context_length_exceeded"
