"""Where first-use costs hide on an accelerator: new prompt lengths and new batch sizes.

usage: prefill_shapes.py MODEL_DIR [--lengths 250,257,263,270] [--batches 1,2,3,4,5,6,7,8]
1. attention alone (`mx.fast.scaled_dot_product_attention`, the model's head shape) for new query/key lengths,
   with the "causal" mask (MLX's CUDA backend builds a cuDNN graph per shape) and with an explicit array mask
   (the composed fallback), each first and second time a length is seen;
2. the prefill of whole prompts of new lengths, first and second time;
3. one decode step of the batch generator at each batch size, first and second time.
A large first/second gap is per-shape compilation that lands on a request unless the server warms that shape.
"""

from __future__ import annotations

import argparse
import time

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import batch_generate
from mlx_lm.models.base import create_causal_mask
from mlx_lm.models.cache import make_prompt_cache


def timed(fn) -> float:
    t0 = time.perf_counter()
    mx.eval(fn())
    return (time.perf_counter() - t0) * 1000


def attention(args, n: int) -> None:
    heads, kv_heads = args.num_attention_heads, args.num_key_value_heads
    d = args.hidden_size // heads
    for mask_kind in ("causal", "array"):
        times = []
        for salt in (0, 1):
            q = mx.random.normal((1, heads, n, d), key=mx.random.key(n * 2 + salt)).astype(mx.float16)
            k = mx.random.normal((1, kv_heads, n, d), key=mx.random.key(n * 3 + salt)).astype(mx.float16)
            mask = "causal" if mask_kind == "causal" else create_causal_mask(n)
            mx.eval(q, k)
            times.append(timed(lambda: mx.fast.scaled_dot_product_attention(q, k, k, scale=d**-0.5, mask=mask)))
        print(f"SDPA mask={mask_kind} len={n} first_ms={times[0]:.1f} second_ms={times[1]:.1f}", flush=True)


def prefill(model, vocab: int, n: int) -> None:
    times = []
    for salt in (7, 11):
        cache = make_prompt_cache(model)
        tokens = mx.array([(salt * i + n) % vocab for i in range(n)])[None]
        times.append(timed(lambda: (model(tokens, cache=cache), [c.state for c in cache])))
    print(f"PREFILL len={n} first_ms={times[0]:.1f} second_ms={times[1]:.1f}", flush=True)


def decode_batches(model, tok, sizes: list[int]) -> None:
    prompt = tok.encode("Hello there, how are you today?")
    for b in sizes:
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            batch_generate(model, tok, [prompt] * b, max_tokens=3)
            times.append((time.perf_counter() - t0) * 1000)
        print(f"BATCH size={b} first_ms={times[0]:.1f} second_ms={times[1]:.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--lengths", default="250,257,263,270")
    ap.add_argument("--batches", default="1,2,3,4,5,6,7,8")
    a = ap.parse_args()
    model, tok = load(a.model)
    lengths = [int(x) for x in a.lengths.split(",")]
    timed(lambda: model(mx.array([[1, 2, 3]]), cache=make_prompt_cache(model)))  # first-ever use
    for n in lengths:
        attention(model.args, n)
    for n in lengths:
        prefill(model, len(tok), n)
    decode_batches(model, tok, [int(x) for x in a.batches.split(",")])


if __name__ == "__main__":
    main()
