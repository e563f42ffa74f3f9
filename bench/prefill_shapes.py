"""Does the first prefill of a new prompt length cost more than the next one of the same length?

usage: prefill_shapes.py MODEL_DIR [--lengths 250,257,263,270,281]
For each length: the prefill time of a fresh prompt of that length, then again with another prompt of the same
length. Then the same lengths split into fixed 128-token chunks plus a remainder. A large first/second gap means
per-shape compilation (kernels or plans built the first time a shape is seen), which lands on time to first
token unless the server warms those shapes.
"""

from __future__ import annotations

import argparse
import time

import mlx.core as mx
from mlx_lm import load
from mlx_lm.models.cache import make_prompt_cache


def prefill(model, tokens: list[int], chunk: int | None = None) -> float:
    cache = make_prompt_cache(model)
    t0 = time.perf_counter()
    pieces = [tokens] if chunk is None else [tokens[i:i + chunk] for i in range(0, len(tokens), chunk)]
    for piece in pieces:
        out = model(mx.array(piece)[None], cache=cache)
        mx.eval(out, [c.state for c in cache])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--lengths", default="250,257,263,270,281,299")
    a = ap.parse_args()
    model, tok = load(a.model)
    vocab = len(tok)
    prefill(model, list(range(100, 164)))  # first-ever use
    for mode, chunk in (("whole", None), ("chunk128", 128)):
        for n in [int(x) for x in a.lengths.split(",")]:
            first = prefill(model, [(7 * i + n) % vocab for i in range(n)], chunk)
            second = prefill(model, [(11 * i + n) % vocab for i in range(n)], chunk)
            print(f"PREFILL mode={mode} len={n} first_ms={first * 1000:.1f} second_ms={second * 1000:.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
