"""What MLX's CUDA attention paths and mlx-router's quantized-layer changes cost, at the model level.

Run with MLX_CUDA_USE_CUDNN_SDPA=1 or =0, and each --layers choice.

usage: MLX_CUDA_USE_CUDNN_SDPA=0 attention_paths.py MODEL_DIR [--lengths 270,277,284,291] [--batches 8,32]
                                                   [--layers plain|flat|N|auto]
1. prefill of prompts of new lengths, first and second time (cuDNN builds an execution plan per shape);
2. prefill of a 4,096-token prompt in 512-token chunks, first and second time;
3. single-stream decode (plain KV cache): median and worst step over 300 tokens (the cache grows in 256-token
   blocks, a new shape each time);
4. batched decode (mlx-lm's batch generator, distinct prompt lengths): aggregate tok/s after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import batch_generate
from mlx_lm.models.cache import make_prompt_cache

from mlx_router.core.dense_rows import calibrate_dense_rows, use_dense_rows


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def prefill(model, tokens: list[int], chunk: int = 512) -> tuple[list, float]:
    cache = make_prompt_cache(model)
    t0 = time.perf_counter()
    for i in range(0, len(tokens), chunk):
        model(mx.array(tokens[i : i + chunk])[None], cache=cache)
        mx.eval([c.state for c in cache])
    return cache, ms_since(t0)


def tokens_of(n: int, salt: int, vocab: int) -> list[int]:
    return [(salt * 7919 + i * 31) % (vocab - 300) + 100 for i in range(n)]


def decode_steps(model, cache, first: int, n: int) -> list[float]:
    y = mx.array([first])
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        logits = model(y[None], cache=cache)[:, -1, :]
        y = mx.argmax(logits, axis=-1)
        mx.eval(y)
        times.append(ms_since(t0))
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--lengths", default="270,277,284,291")
    ap.add_argument("--batches", default="8,32")
    ap.add_argument(
        "--layers",
        default="plain",
        help="quantized layers: plain (mlx-lm's), flat (mlx-router's 2-D product), an integer (2-D product and "
        "dense matmul from that many rows) or auto (mlx-router's per-shape calibration)",
    )
    a = ap.parse_args()
    model, tok = load(a.model)
    if a.layers == "auto":
        t0 = time.perf_counter()
        chosen = calibrate_dense_rows(model)
        use_dense_rows(model, chosen)
        print(f"CALIBRATED in {time.perf_counter() - t0:.2f}s: {chosen}", flush=True)
    elif a.layers != "plain":
        use_dense_rows(model, 0 if a.layers == "flat" else int(a.layers))
    tag = f"cudnn={os.environ.get('MLX_CUDA_USE_CUDNN_SDPA', 'unset')} layers={a.layers}"
    vocab = len(tok)
    prefill(model, tokens_of(16, 0, vocab))  # first-ever use
    for n in [int(x) for x in a.lengths.split(",")]:
        _, first = prefill(model, tokens_of(n, 1, vocab))
        _, second = prefill(model, tokens_of(n, 2, vocab))
        print(f"PREFILL {tag} len={n} first_ms={first:.1f} second_ms={second:.1f}", flush=True)
    _, first = prefill(model, tokens_of(4096, 3, vocab))
    cache, second = prefill(model, tokens_of(4096, 4, vocab))
    print(f"PREFILL {tag} len=4096 first_ms={first:.1f} second_ms={second:.1f}", flush=True)
    cache, _ = prefill(model, tokens_of(270, 5, vocab))
    steps = decode_steps(model, cache, 11, 300)
    print(
        f"DECODE1 {tag} median_ms={statistics.median(steps):.2f} max_ms={max(steps):.1f} "
        f"tok_s={1000 * len(steps) / sum(steps):.1f}",
        flush=True,
    )
    for b in [int(x) for x in a.batches.split(",")]:
        prompts = [tokens_of(262 + 3 * i, 10 + i, vocab) for i in range(b)]
        batch_generate(model, tok, prompts, max_tokens=8)
        t0 = time.perf_counter()
        r = batch_generate(model, tok, prompts, max_tokens=64)
        s = r.stats
        print(
            f"BATCH {tag} B={b} prompt_tps={s.prompt_tps:.0f} gen_tps={s.generation_tps:.1f} "
            f"wall_s={time.perf_counter() - t0:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
