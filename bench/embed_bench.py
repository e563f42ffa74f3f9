"""Embeddings: texts per second through the engine's EmbeddingRunner, requests one at a time against the same
requests queued together (batched), on a random-weight qwen3 of a chosen shape; and the largest difference
between the two runs' vectors.

usage: embed_bench.py [--shape small|0.6b] [--requests 32] [--tokens 64] [--spread 0.5] [--repeat 3] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

import mlx.core as mx
import numpy as np
from mlx_lm.models import qwen3

from mlx_router.config.embedding_spec import EmbeddingSpec
from mlx_router.core.embeddings import EmbeddingConfig, EmbeddingJob, EmbeddingRunner

SHAPES = {
    "small": dict(hidden_size=256, num_hidden_layers=4, intermediate_size=768, num_attention_heads=4),
    # Qwen3-Embedding-0.6B's shape
    "0.6b": dict(hidden_size=1024, num_hidden_layers=28, intermediate_size=3072, num_attention_heads=16),
}


def build(shape: str) -> qwen3.Model:
    dims = SHAPES[shape]
    heads = dims["num_attention_heads"]
    args = qwen3.ModelArgs(
        model_type="qwen3",
        vocab_size=32000,
        rms_norm_eps=1e-6,
        num_key_value_heads=max(1, heads // 2),
        head_dim=dims["hidden_size"] // heads,
        max_position_embeddings=32768,
        rope_theta=1e6,
        tie_word_embeddings=True,
        **dims,
    )
    mx.random.seed(0)
    model = qwen3.Model(args)
    mx.eval(model.parameters())
    return model


def run(runner: EmbeddingRunner, requests: list[list[int]], together: bool) -> tuple[float, list[bytes]]:
    out: dict[int, bytes] = {}
    t0 = time.perf_counter()
    for i, row in enumerate(requests):
        runner.add(EmbeddingJob(str(i), [row], None, lambda v, i=i: out.__setitem__(i, v[0])))
        if not together:
            while runner.has_work():
                runner.step()
    while runner.has_work():
        runner.step()
    return time.perf_counter() - t0, [out[i] for i in range(len(requests))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="small", choices=sorted(SHAPES))
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64, help="mean tokens a text")
    ap.add_argument("--spread", type=float, default=0.5, help="lengths vary by this fraction of --tokens")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each way, alternating; the best counts")
    ap.add_argument("--out", help="append the result row to this JSONL file")
    a = ap.parse_args()
    rng = random.Random(0)
    requests = [
        [
            rng.randrange(32000)
            for _ in range(rng.randint(round(a.tokens * (1 - a.spread)), round(a.tokens * (1 + a.spread))))
        ]
        for _ in range(a.requests)
    ]
    spec = EmbeddingSpec("last", True, False, True, "bench")
    runner = EmbeddingRunner("bench", build(a.shape), spec, EmbeddingConfig(batch_tokens=4096, step_tokens=512))
    run(runner, requests[:4], together=True)  # first use compiles kernels
    times: dict[bool, list[float]] = {False: [], True: []}
    vectors = {}
    for _ in range(a.repeat):  # alternating, so that both ways see the same load
        for together in (False, True):
            seconds, vectors[together] = run(runner, requests, together)
            times[together].append(seconds)
    best = {k: min(v) for k, v in times.items()}
    diff = max(
        float(np.abs(np.frombuffer(x, "<f4") - np.frombuffer(y, "<f4")).max())
        for x, y in zip(vectors[False], vectors[True], strict=True)
    )
    row = {
        "shape": a.shape,
        "requests": a.requests,
        "tokens": sum(map(len, requests)),
        "spread": a.spread,
        "one_at_a_time_texts_s": round(a.requests / best[False], 1),
        "batched_texts_s": round(a.requests / best[True], 1),
        "speedup": round(best[False] / best[True], 2),
        "max_abs_diff": diff,
        "machine": f"{platform.machine()} {mx.default_device()}",
        "load": os.getloadavg()[0],
    }
    print(json.dumps(row))
    if a.out:
        with open(a.out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
