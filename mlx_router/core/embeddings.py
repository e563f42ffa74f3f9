"""Embedding vectors on the MLX worker thread: pooling, batching, and the runner that a loaded embedding model has.

A decoder (Qwen3-Embedding) runs through mlx-lm's model class, `model.model(tokens)`: the hidden states after the
final norm, before the LM head. A batch's rows are padded on the right: attention is causal, so a row's real
tokens never see the pads after them, and every row's positions start at 0 as they do alone; no mask is needed
and the vectors equal those of the rows computed one by one (left padding would shift the rotary positions and
need a mask). The last-token pooling reads each row's own last real token. Long batches run in chunks of
`step_tokens` through a KV cache, like a prompt's prefill, so the attention's memory stays bounded.

A vector leaves the engine as float32 little-endian bytes: what base64 `encoding_format` sends as is, and what
the HTTP side turns into floats without numpy or MLX.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import make_prompt_cache

from mlx_router.config.embedding_spec import EmbeddingSpec

logger = logging.getLogger(__name__)

Reply = Callable[[list[bytes] | BaseException], None]
# a row shares a batch with rows at most this much longer than itself (as a fraction of the longest): padding
# is computed like tokens, and on a CPU a batch of short rows is no faster than the rows one by one
MAX_PADDING = 0.25


def _pool_chunk(h: mx.array, start: int, lengths: mx.array, pooling: str, acc: mx.array | None) -> mx.array:
    """Fold one chunk of hidden states (rows x chunk x hidden, positions start..) into the pooled rows."""
    h = h.astype(mx.float32)
    n = h.shape[1]
    positions = mx.arange(start, start + n)[None, :]
    if pooling == "mean":
        valid = (positions < lengths[:, None]).astype(mx.float32)[:, :, None]
        part = (h * valid).sum(axis=1)
        return part if acc is None else acc + part
    index = (lengths - 1) if pooling == "last" else mx.zeros_like(lengths)
    inside = (index >= start) & (index < start + n)
    picked = mx.take_along_axis(h, mx.clip(index - start, 0, n - 1)[:, None, None], axis=1)[:, 0, :]
    if acc is None:
        acc = mx.zeros_like(picked)
    return mx.where(inside[:, None], picked, acc)


def decoder_hidden_pool(model: Any, rows: Sequence[Sequence[int]], pooling: str, step_tokens: int) -> mx.array:
    """Pooled final hidden states (float32, rows x hidden) of a causal mlx-lm model, rows right-padded."""
    lengths_list = [len(r) for r in rows]
    width = max(lengths_list)
    tokens = mx.array([list(r) + [0] * (width - len(r)) for r in rows], dtype=mx.int32)
    lengths = mx.array(lengths_list, dtype=mx.int32)
    cache = make_prompt_cache(model)
    acc: mx.array | None = None
    for start in range(0, width, step_tokens):
        h = model.model(tokens[:, start : start + step_tokens], cache=cache)
        acc = _pool_chunk(h, start, lengths, pooling, acc)
        mx.eval(acc, [c.state for c in cache])
    assert acc is not None
    if pooling == "mean":
        acc = acc / lengths[:, None].astype(mx.float32)
    return acc


def encoder_hidden_pool(model: Any, rows: Sequence[Sequence[int]], pooling: str) -> mx.array:
    """Pooled last hidden states (float32) of a bidirectional mlx-embeddings model; pads masked out."""
    lengths_list = [len(r) for r in rows]
    width = max(lengths_list)
    tokens = mx.array([list(r) + [0] * (width - len(r)) for r in rows], dtype=mx.int32)
    lengths = mx.array(lengths_list, dtype=mx.int32)
    mask = (mx.arange(width)[None, :] < lengths[:, None]).astype(mx.float32)
    out = model(tokens, attention_mask=mask)
    pooled = _pool_chunk(out.last_hidden_state, 0, lengths, pooling, None)
    if pooling == "mean":
        pooled = pooled / lengths[:, None].astype(mx.float32)
    return pooled


def finish(vectors: mx.array, normalize: bool, dimensions: int | None) -> list[bytes]:
    """Truncate (Matryoshka) and L2-normalise; one float32 little-endian byte string per row."""
    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    if normalize or dimensions is not None:
        norms = mx.linalg.norm(vectors, axis=-1, keepdims=True)
        vectors = vectors / mx.maximum(norms, 1e-12)
    host = np.asarray(vectors.astype(mx.float32), dtype="<f4")
    return [row.tobytes() for row in host]


def pool_rows(model: Any, spec: EmbeddingSpec, rows: Sequence[Sequence[int]], step_tokens: int) -> mx.array:
    """The pooled vectors (float32, before truncation and normalisation) of `rows` (token ids), computed together."""
    if spec.encoder:
        return encoder_hidden_pool(model, rows, spec.pooling)
    return decoder_hidden_pool(model, rows, spec.pooling, step_tokens)


def embed(
    model: Any, spec: EmbeddingSpec, rows: Sequence[Sequence[int]], dimensions: int | None, step_tokens: int
) -> list[bytes]:
    """The vectors of `rows` (token ids), computed together."""
    return finish(pool_rows(model, spec, rows, step_tokens), spec.normalize, dimensions)


@dataclass(eq=False)  # jobs are told apart by identity
class EmbeddingJob:
    """One request's inputs, answered once every row has its vector."""

    job_id: str
    rows: list[list[int]]
    dimensions: int | None
    reply: Reply
    vectors: list[bytes | None] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # rows not yet taken into a batch, in order

    def __post_init__(self) -> None:
        self.vectors = [None] * len(self.rows)
        self.pending = list(range(len(self.rows)))


@dataclass(frozen=True)
class EmbeddingConfig:
    batch_tokens: int = 4096  # padded tokens of one forward pass (rows x the longest row)
    step_tokens: int = 512  # tokens per chunk of one row's forward pass


class EmbeddingRunner:
    """The queue of one embedding model: each step computes one batch of rows taken from the waiting requests
    (`_take`), so concurrent requests share forward passes (worker thread only)."""

    def __init__(self, model_id: str, model: Any, spec: EmbeddingSpec, config: EmbeddingConfig) -> None:
        self.model_id = model_id
        self.model = model
        self.spec = spec
        self.config = config
        self._jobs: deque[EmbeddingJob] = deque()

    # -- what the pool and the worker ask of every runner ----------------------------------------------------
    def has_work(self) -> bool:
        return bool(self._jobs)

    def ready_in(self) -> float:
        return 0.0

    def counts(self) -> tuple[int, int]:
        running = sum(1 for j in self._jobs if len(j.pending) < len(j.rows))
        return running, len(self._jobs) - running

    def kv_bytes(self) -> int:
        return 0  # a batch's cache lives for one step only

    def prefix_bytes(self) -> int:
        return 0

    def close(self) -> None:
        self._jobs.clear()

    def cancel_all(self, error: BaseException) -> None:
        jobs, self._jobs = list(self._jobs), deque()
        for job in jobs:
            job.reply(error)

    def cancel(self, job_id: str) -> None:
        """The client went away: its rows not yet computed are dropped."""
        self._jobs = deque(j for j in self._jobs if j.job_id != job_id)

    def warm_up(self, seed: list[int]) -> None:
        """A row alone and a padded batch, so that the first requests do not wait for kernel compiles."""
        try:
            mx.eval(pool_rows(self.model, self.spec, [seed], self.config.step_tokens))
            mx.eval(pool_rows(self.model, self.spec, [seed, seed[: max(1, len(seed) // 2)]], self.config.step_tokens))
        except Exception as e:  # the model still works; its first requests may wait for kernel compiles
            logger.warning("warm-up of %s failed, serving it without: %s", self.model_id, e)

    # -- requests --------------------------------------------------------------------------------------------
    def add(self, job: EmbeddingJob) -> None:
        if not job.rows:
            job.reply([])
            return
        self._jobs.append(job)

    def step(self) -> None:
        """One forward pass over rows of the oldest requests, up to `batch_tokens` padded tokens (one row at
        least, however long: it is then chunked by `step_tokens`)."""
        taken = self._take()
        pooled = pool_rows(self.model, self.spec, [job.rows[i] for job, i in taken], self.config.step_tokens)
        by_dimensions: dict[int | None, list[int]] = {}
        for k, (job, _) in enumerate(taken):
            by_dimensions.setdefault(job.dimensions, []).append(k)
        for dimensions, ks in by_dimensions.items():
            vectors = finish(pooled[mx.array(ks)], self.spec.normalize, dimensions)
            for k, vector in zip(ks, vectors, strict=True):
                job, index = taken[k]
                job.vectors[index] = vector
        for job in {id(job): job for job, _ in taken}.values():
            if not job.pending and all(v is not None for v in job.vectors):
                self._jobs.remove(job)
                job.reply([v for v in job.vectors if v is not None])

    def _take(self) -> list[tuple[EmbeddingJob, int]]:
        """The rows of the next batch. The window is the oldest waiting rows, in order of arrival, up to
        `batch_tokens` tokens (one row at least); of those, the longest go together, as many as fit at their
        width and no shorter than `MAX_PADDING` below it, so that rows of like lengths share a batch and little
        of it is padding. The oldest row is in every
        window, so it is taken within a few steps however many rows arrive after it."""
        window: list[tuple[EmbeddingJob, int]] = []
        tokens = 0
        for job in self._jobs:
            for index in job.pending:
                size = len(job.rows[index])
                if window and tokens + size > self.config.batch_tokens:
                    break
                window.append((job, index))
                tokens += size
            else:
                continue
            break
        window.sort(key=lambda row: len(row[0].rows[row[1]]), reverse=True)
        width = len(window[0][0].rows[window[0][1]])
        shortest = (1 - MAX_PADDING) * width
        alike = [row for row in window if len(row[0].rows[row[1]]) >= shortest]
        taken = alike[: max(1, self.config.batch_tokens // width)]
        for job, index in taken:
            job.pending.remove(index)
        return taken
