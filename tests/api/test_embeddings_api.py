"""POST /v1/embeddings in process, with the tiny Qwen3-Embedding and tiny BERT: OpenAI's shapes, base64, token-id
input, dimensions, usage, batching across concurrent requests, and the 400s between chat and embedding models."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from mlx_router.app import create_app
from tests.api.conftest import make_settings
from tests.api.test_api_inprocess import assert_error

URL = "/v1/embeddings"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "hi", "A third text, about the sea and the weather."]


@pytest.fixture(scope="module")
def client(embedding_models_root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(embedding_models_root))) as c:
        yield c


@pytest.fixture(scope="module")
def reference(embedding_model_dir):
    """Direct computations with mlx-lm: the final hidden state of each text's last token, L2-normalised."""
    import mlx.core as mx
    from mlx_lm import load

    model, tokenizer = load(str(embedding_model_dir))

    def vector(tokens: list[int], dimensions: int | None = None) -> np.ndarray:
        h = np.array(model.model(mx.array([tokens]))[0, -1].astype(mx.float32))[:dimensions]
        return h / np.linalg.norm(h)

    return tokenizer, vector


def floats(item) -> np.ndarray:
    return np.array(item["embedding"], dtype=np.float32)


def test_list_of_texts_equals_direct_computation(client, reference):
    tokenizer, vector = reference
    r = client.post(URL, json={"model": "tiny-embed", "input": TEXTS})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "list" and out["model"] == "tiny-embed"
    assert [d["index"] for d in out["data"]] == [0, 1, 2] and {d["object"] for d in out["data"]} == {"embedding"}
    rows = [tokenizer.encode(t) for t in TEXTS]
    for item, row in zip(out["data"], rows, strict=True):
        assert np.abs(floats(item) - vector(row)).max() < 1e-5
    n = sum(len(r) for r in rows)
    assert out["usage"] == {"prompt_tokens": n, "total_tokens": n}


def test_a_string_base64_and_token_ids_agree(client, reference):
    tokenizer, vector = reference
    one = client.post(URL, json={"model": "tiny-embed", "input": TEXTS[0]}).json()["data"]
    assert len(one) == 1
    b64 = client.post(URL, json={"model": "tiny-embed", "input": TEXTS[0], "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    ids = tokenizer.encode(TEXTS[0])
    by_ids = client.post(URL, json={"model": "tiny-embed", "input": ids}).json()
    by_lists = client.post(URL, json={"model": "tiny-embed", "input": [ids, tokenizer.encode(TEXTS[1])]}).json()
    assert np.array_equal(decoded, floats(one[0]))
    assert np.abs(floats(by_ids["data"][0]) - vector(ids)).max() < 1e-5
    assert np.abs(floats(by_lists["data"][0]) - vector(ids)).max() < 1e-5
    assert by_ids["usage"]["prompt_tokens"] == len(ids)


def test_dimensions_truncate_and_renormalise(client, reference):
    tokenizer, vector = reference
    r = client.post(URL, json={"model": "tiny-embed", "input": TEXTS[:2], "dimensions": 16}).json()
    for item, text in zip(r["data"], TEXTS[:2], strict=True):
        v = floats(item)
        assert v.shape == (16,) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
        assert np.abs(v - vector(tokenizer.encode(text), 16)).max() < 1e-5


def test_concurrent_requests_get_their_own_vectors(embedding_models_root, reference):
    """Requests arriving together are computed in shared batches; each gets the vectors it would get alone."""
    tokenizer, vector = reference
    inputs = [[TEXTS[i % 3], f"request {i} says something of its own"] for i in range(8)]

    async def run() -> list[dict]:
        app = create_app(make_settings(embedding_models_root))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                replies = await asyncio.gather(*(c.post(URL, json={"model": "tiny-embed", "input": x}) for x in inputs))
        return [r.json() for r in replies]

    for out, texts in zip(asyncio.run(run()), inputs, strict=True):
        for item, text in zip(out["data"], texts, strict=True):
            assert np.abs(floats(item) - vector(tokenizer.encode(text))).max() < 1e-5


def test_bert_through_mlx_embeddings(client, bert_embedding_dir):
    import mlx.core as mx
    from mlx_embeddings.utils import load_model
    from transformers import AutoTokenizer

    r = client.post(URL, json={"model": "tiny-bert", "input": ["hello world", "the lazy dog"]})
    assert r.status_code == 200, r.text
    model, tokenizer = load_model(bert_embedding_dir), AutoTokenizer.from_pretrained(bert_embedding_dir)
    for item, text in zip(r.json()["data"], ["hello world", "the lazy dog"], strict=True):
        h = np.array(model(mx.array([tokenizer.encode(text)])).last_hidden_state[0].astype(mx.float32)).mean(axis=0)
        assert np.abs(floats(item) - h / np.linalg.norm(h)).max() < 1e-5


@pytest.mark.parametrize(
    "body, param",
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": [1.5]}, "input"),
        ({"input": ["a", 1]}, "input"),
        ({"input": [10**9]}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "dimensions": 65}, "dimensions"),
        ({"input": "x " * 5000}, "input"),
        ({"model": "tiny-bert", "input": "x", "dimensions": 8}, "dimensions"),
    ],
)
def test_bad_requests_are_400_in_openai_envelope(client, body, param):
    assert_error(client.post(URL, json={"model": "tiny-embed", **body}), 400, "invalid_request_error", param=param)


def test_chat_models_and_embedding_models_refuse_each_other(client):
    err = assert_error(client.post(URL, json={"model": "tiny-a", "input": "x"}), 400, param="model")
    assert "not an embedding model" in err["message"]
    chat = {"model": "tiny-embed", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    err = assert_error(client.post("/v1/chat/completions", json=chat), 400, param="model")
    assert "embedding model" in err["message"]
    legacy = {"model": "tiny-bert", "prompt": "hi", "max_tokens": 2}
    assert_error(client.post("/v1/completions", json=legacy), 400, param="model")
    assert_error(client.post(URL, json={"model": "ghost", "input": "x"}), 404, code="model_not_found")


def test_models_lists_the_type(client):
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert (cards["tiny-embed"]["type"], cards["tiny-bert"]["type"], cards["tiny-a"]["type"]) == (
        "embeddings",
        "embeddings",
        "llm",
    )


def test_a_request_past_the_memory_budget_is_503_with_retry_after(embedding_models_root: Path):
    """Admission as for a chat: the batch's KV and activations must fit beside the model, or 503."""
    with TestClient(create_app(make_settings(embedding_models_root, memory_budget_gb=0.004))) as c:
        assert c.post(URL, json={"model": "tiny-embed", "input": "fits"}).status_code == 200
        r = c.post(URL, json={"model": "tiny-embed", "input": ["many words in a long text " * 40] * 64})
        assert_error(r, 503, code="insufficient_memory")
        assert int(r.headers["Retry-After"]) >= 1


def test_a_full_queue_is_429_with_retry_after(embedding_models_root: Path):
    """The model's running+queued limit counts embedding requests as it counts chats."""
    settings = make_settings(embedding_models_root, max_running_requests=1, max_queued_requests=0)

    async def run() -> list[httpx.Response]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                assert (await c.post(URL, json={"model": "tiny-embed", "input": "load it"})).status_code == 200
                body = {"model": "tiny-embed", "input": TEXTS * 20}
                return list(await asyncio.gather(*(c.post(URL, json=body) for _ in range(3))))

    replies = asyncio.run(run())
    assert sorted(r.status_code for r in replies) == [200, 429, 429]
    refused = next(r for r in replies if r.status_code == 429)
    assert_error(refused, 429, "rate_limit_error", code="queue_full")
    assert int(refused.headers["Retry-After"]) >= 1
