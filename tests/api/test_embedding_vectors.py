"""Embedding vectors on the tiny Qwen3-Embedding, without HTTP: equal to a direct computation with mlx-lm, and
unchanged by batching (several rows, several requests, chunked forward passes)."""

from __future__ import annotations

import numpy as np
import pytest
from mlx_lm import load

from mlx_router.config.embedding_spec import folder_spec
from mlx_router.config.model_files import read_json
from mlx_router.core.embeddings import EmbeddingConfig, EmbeddingJob, EmbeddingRunner, embed

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "hi",
    "Embeddings map text to vectors; similar texts get similar vectors, which retrieval systems rank by.",
    "A fourth, middling sentence about the sea and the weather.",
]


@pytest.fixture(scope="module")
def loaded(embedding_model_dir):
    model, tokenizer = load(str(embedding_model_dir))
    spec = folder_spec(str(embedding_model_dir), read_json(embedding_model_dir / "config.json"))
    assert spec is not None and not isinstance(spec, str)
    return model, tokenizer, spec


def direct(model, tokens, dimensions=None):
    """The reference: the final hidden state of the last token, alone, truncated, L2-normalised (numpy)."""
    import mlx.core as mx

    h = model.model(mx.array([tokens]))[0, -1].astype(mx.float32)
    v = np.array(h)[:dimensions]
    return v / np.linalg.norm(v)


def vectors(blobs):
    return [np.frombuffer(b, dtype="<f4") for b in blobs]


def test_spec_of_the_fixture_is_last_token_normalised(loaded):
    spec = loaded[2]
    assert (spec.pooling, spec.normalize, spec.encoder, spec.matryoshka) == ("last", True, False, True)


def test_tokenizer_appends_the_end_token(loaded):
    _, tokenizer, _ = loaded
    assert tokenizer.encode("hi")[-1] == tokenizer.convert_tokens_to_ids("<|endoftext|>")


def test_batch_equals_direct_and_one_by_one(loaded):
    model, tokenizer, spec = loaded
    rows = [tokenizer.encode(t) for t in TEXTS]
    assert len({len(r) for r in rows}) == len(rows)  # the batch pads every row but the longest
    batch = vectors(embed(model, spec, rows, None, step_tokens=512))
    alone = [vectors(embed(model, spec, [r], None, step_tokens=512))[0] for r in rows]
    for b, a, r in zip(batch, alone, rows, strict=True):
        ref = direct(model, r)
        assert b.shape == (64,)
        assert np.abs(a - ref).max() < 1e-5
        assert np.abs(b - ref).max() < 1e-5
        assert abs(float(np.linalg.norm(b)) - 1.0) < 1e-5
    assert np.abs(batch[0] - batch[1]).max() > 1e-3  # different texts, different vectors


def test_chunked_forward_equals_direct(loaded):
    model, tokenizer, spec = loaded
    rows = [tokenizer.encode(t) for t in TEXTS]
    chunked = vectors(embed(model, spec, rows, None, step_tokens=5))
    for c, r in zip(chunked, rows, strict=True):
        assert np.abs(c - direct(model, r)).max() < 1e-5


def test_dimensions_truncate_then_renormalise(loaded):
    model, tokenizer, spec = loaded
    rows = [tokenizer.encode(t) for t in TEXTS[:2]]
    short = vectors(embed(model, spec, rows, 16, step_tokens=512))
    for s, r in zip(short, rows, strict=True):
        assert s.shape == (16,)
        assert np.abs(s - direct(model, r, 16)).max() < 1e-5


def test_runner_batches_requests_and_rows(loaded):
    """Two requests queued together share forward passes; a small batch budget splits them across steps; each
    request gets its own vectors, in its own order."""
    model, tokenizer, spec = loaded
    rows = [tokenizer.encode(t) for t in TEXTS]
    runner = EmbeddingRunner("m", model, spec, EmbeddingConfig(batch_tokens=48, step_tokens=512))
    replies: dict[str, object] = {}
    runner.add(EmbeddingJob("a", rows[:3], None, lambda v: replies.__setitem__("a", v)))
    runner.add(EmbeddingJob("b", rows[3:] + rows[:1], None, lambda v: replies.__setitem__("b", v)))
    assert runner.counts() == (0, 2)
    steps = 0
    while runner.has_work():
        runner.step()
        steps += 1
    assert 2 <= steps <= len(rows) + 1
    got = vectors(replies["a"]) + vectors(replies["b"])  # type: ignore[arg-type]
    for g, r in zip(got, rows[:3] + rows[3:] + rows[:1], strict=True):
        assert np.abs(g - direct(model, r)).max() < 1e-5


def test_runner_cancel_drops_a_request(loaded):
    model, tokenizer, spec = loaded
    runner = EmbeddingRunner("m", model, spec, EmbeddingConfig())
    replies: list[object] = []
    runner.add(EmbeddingJob("a", [tokenizer.encode("x")], None, replies.append))
    runner.cancel("a")
    assert not runner.has_work() and replies == []


@pytest.fixture(scope="module")
def bert(bert_embedding_dir):
    from mlx_embeddings.utils import load_model
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    spec = folder_spec(str(bert_embedding_dir), read_json(bert_embedding_dir / "config.json"))
    assert spec is not None and not isinstance(spec, str)
    return load_model(bert_embedding_dir), load_tokenizer(bert_embedding_dir), spec


def test_bert_batch_equals_direct_mean_pooling(bert):
    """A BERT model through mlx-embeddings: pads are masked, so batched vectors equal the mean of the token
    states of each text alone."""
    import mlx.core as mx

    model, tokenizer, spec = bert
    assert (spec.pooling, spec.normalize, spec.encoder, spec.matryoshka) == ("mean", True, True, False)
    texts = ["the quick brown fox", "hello", "retrieval ranks passages by the cosine of their vectors"]
    rows = [tokenizer.encode(t) for t in texts]
    assert rows[1][0] == tokenizer.convert_tokens_to_ids("[CLS]") and len({len(r) for r in rows}) == 3
    batch = vectors(embed(model, spec, rows, None, step_tokens=512))
    for b, r in zip(batch, rows, strict=True):
        h = np.array(model(mx.array([r])).last_hidden_state[0].astype(mx.float32)).mean(axis=0)
        assert np.abs(b - h / np.linalg.norm(h)).max() < 1e-5


def test_qwens_own_checkpoint_layout_loads(loaded, embedding_model_dir, tmp_path):
    """Qwen's Qwen3-Embedding files name the backbone's tensors without `model.` and the 8B says its head is
    untied yet ships none: plain mlx-lm refuses such a folder; the embedding loader reads it, same vectors."""
    import json
    import shutil

    import mlx.core as mx
    from mlx_lm.utils import load_model

    from mlx_router.core.embedding_loader import check_decoder_weights, load_decoder_embedding

    model, tokenizer, spec = loaded
    folder = shutil.copytree(embedding_model_dir, tmp_path / "official")
    for index in folder.glob("*.safetensors.index.json"):
        index.unlink()
    weights = mx.load(str(folder / "model.safetensors"))
    assert isinstance(weights, dict)
    mx.save_safetensors(str(folder / "model.safetensors"), {k.removeprefix("model."): v for k, v in weights.items()})
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    with pytest.raises(ValueError):
        load_model(folder)
    check_decoder_weights(folder)
    official = load_decoder_embedding("official", folder, tokenizer).model
    rows = [tokenizer.encode(t) for t in TEXTS]
    for got, row in zip(vectors(embed(official, spec, rows, None, step_tokens=512)), rows, strict=True):
        assert np.abs(got - direct(model, row)).max() < 1e-5
