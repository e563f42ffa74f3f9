"""Embeddings through a real server and the official openai client (`client.embeddings.create`, which asks for
base64 and decodes it): vectors equal to a direct computation with mlx-lm, unchanged by concurrent batching,
errors as the client's exceptions; and README's embeddings example, run as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import pytest

from tests.e2e.conftest import base_config
from tests.server_process import REPO, RouterServer

MODEL = "Qwen/Qwen3-Embedding-0.6B"  # the README's name, here the tiny Qwen3-Embedding
TEXTS = ["A cat sleeps on the sofa.", "A kitten naps on the couch.", "Quarterly tax forms are due."]


@pytest.fixture(scope="module")
def server(embedding_model_dir: Path, random_llm_dir: Path, tmp_path_factory) -> Iterator[RouterServer]:
    root = tmp_path_factory.mktemp("emb-models")
    (root / "Qwen").mkdir()
    (root / "Qwen" / "Qwen3-Embedding-0.6B").symlink_to(embedding_model_dir, target_is_directory=True)
    (root / "tiny-a").symlink_to(random_llm_dir, target_is_directory=True)
    with RouterServer(tmp_path_factory.mktemp("emb-server"), base_config(root)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: RouterServer):  # noqa: ANN201 - an openai.OpenAI
    return server.openai()


@pytest.fixture(scope="module")
def direct(embedding_model_dir: Path):
    import mlx.core as mx
    from mlx_lm import load

    model, tokenizer = load(str(embedding_model_dir))

    def vector(text: str, dimensions: int | None = None) -> np.ndarray:
        h = model.model(mx.array([tokenizer.encode(text)]))[0, -1].astype(mx.float32)
        v = np.array(h)[:dimensions]
        return v / np.linalg.norm(v)

    return vector


def test_vectors_equal_a_direct_computation(client, direct):
    out = client.embeddings.create(model=MODEL, input=TEXTS)
    assert out.model == MODEL and [d.index for d in out.data] == [0, 1, 2]
    for item, text in zip(out.data, TEXTS, strict=True):
        assert np.abs(np.array(item.embedding, dtype=np.float32) - direct(text)).max() < 1e-5
    assert out.usage.prompt_tokens == out.usage.total_tokens > len(TEXTS)
    floats = client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    assert np.array_equal(np.array(floats.data[0].embedding, dtype=np.float32), np.array(out.data[0].embedding))


def test_dimensions(client, direct):
    out = client.embeddings.create(model=MODEL, input=TEXTS[:1], dimensions=32)
    v = np.array(out.data[0].embedding, dtype=np.float32)
    assert v.shape == (32,) and np.abs(v - direct(TEXTS[0], 32)).max() < 1e-5


def test_concurrent_requests_equal_one_by_one(client, direct):
    inputs = [[TEXTS[i % 3], f"text {i} of sixteen"] for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda x: client.embeddings.create(model=MODEL, input=x), inputs))
    for out, texts in zip(outs, inputs, strict=True):
        for item, text in zip(out.data, texts, strict=True):
            assert np.abs(np.array(item.embedding, dtype=np.float32) - direct(text)).max() < 1e-5


def test_errors_are_the_clients_exceptions(client):
    with pytest.raises(openai.BadRequestError, match="not an embedding model"):
        client.embeddings.create(model="tiny-a", input="x")
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input="x", dimensions=10_000)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="ghost", input="x")
    types = {m.id: m.model_extra.get("type") for m in client.models.list().data}
    assert types == {MODEL: "embeddings", "tiny-a": "llm"}


def test_readme_embeddings_example_runs(server: RouterServer, tmp_path: Path):
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- embeddings-example -->\n```python\n(.*?)```", text, re.S)
    assert match is not None
    script = tmp_path / "example.py"
    script.write_text(match.group(1).replace("localhost:8800", f"127.0.0.1:{server.port}"))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    size, _, _, tokens = out.stdout.split()
    assert size == "64" and int(tokens) > 3
