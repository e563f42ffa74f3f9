"""Where a decode step's time goes when it runs slow, and what compiling parts of each layer saves.

usage: step_modes.py MODEL_DIR [--batch 8] [--tokens 256] [--rounds 6] [--variants raw,runner,cmlp,split]
                     [--json FILE]

The 0.5B's 8-row decode step runs at about 5 ms in some runs and 8-11 ms in others, raw mlx-lm and the router
alike (bench/RESULTS.md, runs 4-6). This script splits every full-batch step of mlx-lm's `GenerationBatch.next`
into the time spent building the model's graph in Python (`build`), handing it to MLX (`mx.async_eval`:
`encode`, where MLX records the kernels and launches CUDA graphs), waiting for the previous step's tokens
(`mx.eval`: `wait`) and the rest, and times two fixed probes on the same thread after each step: a pure
Python loop (`py`) and 200 MLX array operations built but never evaluated (`mlx`, MLX's host-side cost of an
operation). A slow round whose probes are slow too is the host's speed; one whose `encode` grows alone is
MLX's recording or launching; one whose `wait` grows is the GPU.

Variants, run in turn for `--rounds` rounds, each on a model of its own:
  raw     mlx-lm's BatchGenerator as `batch_generate` drives it, `mlx_lm.load`'s model
  runner  mlx-router's ModelRunner on its loader's model
  cmlp    raw, each layer's MLP compiled (`mx.compile`) for decode steps
  split   raw, each layer's decode step as two compiled functions around the attention (norm and q/k/v
          projections; output projection, residuals, norm and MLP) and rope, the cache and attention between
Greedy tokens of every variant are compared with raw's for the same prompts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from load import prompt
from step_ablation import runner_batch

from mlx_router.engine.backend_env import configure_backend

configure_backend(cudnn_attention=False)  # before MLX first runs, as the server does

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import mlx_lm  # noqa: E402
from mlx_lm.generate import BatchGenerator, GenerationBatch  # noqa: E402
from mlx_lm.models.base import scaled_dot_product_attention  # noqa: E402

from mlx_router.core.loader import load_weights, open_tokenizer  # noqa: E402
from mlx_router.core.runner import ModelRunner, RunnerConfig  # noqa: E402

PARTS = ("total", "build", "encode", "wait", "py", "mlx")


def py_probe() -> float:
    t = time.perf_counter()
    s = 0
    for i in range(2000):
        s += i * i
    return time.perf_counter() - t


def mlx_probe(x: mx.array) -> float:
    t = time.perf_counter()
    y = x
    for _ in range(200):
        y = y + x
    return time.perf_counter() - t


class StepSplit:
    """Times the parts of every GenerationBatch.next call (and the probes after it) while `on`."""

    def __init__(self, model_classes: set[type]) -> None:
        self.steps: list[tuple[int, ...]] = []
        self.acc = {"build": 0.0, "encode": 0.0, "wait": 0.0}
        self.inside = False
        self.small = mx.zeros((8,))
        mx.eval(self.small)
        split = self

        def timed(name: str, fn):  # type: ignore[no-untyped-def]
            def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
                if not split.inside:
                    return fn(*args, **kwargs)
                t = time.perf_counter()
                out = fn(*args, **kwargs)
                split.acc[name] += time.perf_counter() - t
                return out

            return wrapper

        for cls in model_classes:
            cls.__call__ = timed("build", cls.__call__)  # type: ignore[method-assign]
        mx.async_eval = timed("encode", mx.async_eval)
        mx.eval = timed("wait", mx.eval)
        inner = GenerationBatch.next

        def step(batch):  # type: ignore[no-untyped-def]
            rows = len(batch.uids)
            split.acc = dict.fromkeys(split.acc, 0.0)
            split.inside = True
            t = time.perf_counter()
            out = inner(batch)
            total = time.perf_counter() - t
            split.inside = False
            a = split.acc
            split.steps.append((rows, total, a["build"], a["encode"], a["wait"], py_probe(), mlx_probe(split.small)))
            return out

        GenerationBatch.next = step  # type: ignore[method-assign]

    def take(self, rows: int) -> list[tuple[float, ...]]:
        full = [tuple(1000 * v for v in s[1:]) for s in self.steps if s[0] == rows]
        self.steps = []
        return full


def summary(steps: list[tuple[float, ...]]) -> dict[str, float]:
    row = {p: round(statistics.median(s[i] for s in steps), 3) for i, p in enumerate(PARTS)}
    totals = sorted(s[0] for s in steps)
    row["p10"] = round(totals[len(totals) // 10], 2)
    row["p90"] = round(totals[(9 * len(totals)) // 10], 2)
    return row


class CompiledMLP(nn.Module):
    """A layer's MLP compiled for decode steps (one token a row); prompts take the MLP as it is."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.inner = mlp
        self._decode = mx.compile(mlp.__call__)

    def __call__(self, x: mx.array) -> mx.array:
        return self._decode(x) if x.shape[1] == 1 else self.inner(x)


class SplitBlock(nn.Module):
    """A llama-layout block whose decode step is two compiled functions around rope, the cache and attention."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.use_sliding = getattr(block, "use_sliding", False)
        attn = block.self_attn

        def heads(t: mx.array, n: int) -> mx.array:
            b, length, _ = t.shape
            return t.reshape(b, length, n, -1).transpose(0, 2, 1, 3)

        def pre(x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
            h = block.input_layernorm(x)
            return (
                heads(attn.q_proj(h), attn.n_heads),
                heads(attn.k_proj(h), attn.n_kv_heads),
                heads(attn.v_proj(h), attn.n_kv_heads),
            )

        def tail(x: mx.array, o: mx.array) -> mx.array:
            b, _, length, _ = o.shape
            h = x + attn.o_proj(o.transpose(0, 2, 1, 3).reshape(b, length, -1))
            return h + block.mlp(block.post_attention_layernorm(h))

        self._pre = mx.compile(pre)
        self._tail = mx.compile(tail)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:  # type: ignore[no-untyped-def]
        if x.shape[1] != 1 or cache is None:
            return self.block(x, mask, cache)
        attn = self.block.self_attn
        q, k, v = self._pre(x)
        q = attn.rope(q, offset=cache.offset)
        k = attn.rope(k, offset=cache.offset)
        k, v = cache.update_and_fetch(k, v)
        o = scaled_dot_product_attention(q, k, v, cache=cache, scale=attn.scale, mask=mask)
        return self._tail(x, o)


def wrap_layers(model: nn.Module, how: str) -> nn.Module:
    layers = model.model.layers
    for i, layer in enumerate(layers):
        if how == "cmlp":
            layer.mlp = CompiledMLP(layer.mlp)
        else:
            layers[i] = SplitBlock(layer)
    return model


def generate(model: nn.Module, eos: list[int], prompts: list[list[int]], n: int) -> list[list[int]]:
    """BatchGenerator driven as batch_generate does; the tokens of every row."""
    gen = BatchGenerator(model, stop_tokens=[[t] for t in eos])
    uids = gen.insert(prompts, [n] * len(prompts))
    out: dict[int, list[int]] = {u: [] for u in uids}
    while responses := gen.next_generated():
        for r in responses:
            out[r.uid].append(r.token)
    gen.close()
    return [out[u] for u in uids]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--words", type=int, default=155)
    ap.add_argument("--variants", default="raw,runner,cmlp,split")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    path = Path(a.model)
    tokenizer = open_tokenizer(path)
    eos = sorted(int(t) for t in tokenizer.eos_token_ids)
    models = {name: mlx_lm.load(str(path))[0] for name in ("raw", "cmlp", "split")}
    wrap_layers(models["cmlp"], "cmlp")
    wrap_layers(models["split"], "split")
    router_model = load_weights("m", path, tokenizer).model
    runner = ModelRunner("m", router_model, tokenizer, RunnerConfig(max_running=max(32, a.batch), prefix_cache_bytes=0))
    split = StepSplit({type(models["raw"]), type(router_model)})

    def encoded(i: int) -> list[int]:
        msgs = [{"role": "user", "content": prompt(i, a.words)}]
        return list(tokenizer.apply_chat_template(msgs, add_generation_prompt=True))

    variants = {
        "raw": lambda ps, n: generate(models["raw"], eos, ps, n),
        "runner": lambda ps, n: runner_batch(runner, ps, n),
        "cmlp": lambda ps, n: generate(models["cmlp"], eos, ps, n),
        "split": lambda ps, n: generate(models["split"], eos, ps, n),
    }
    chosen = [v for v in a.variants.split(",") if v]
    warm = [encoded(i) for i in range(a.batch)]
    reference = variants["raw"](warm, 32)
    for name in chosen:  # first-use compiles of every variant's shapes; greedy tokens against raw's
        got = variants[name](warm, 32)
        if got is not None and name != "raw":
            same = sum(g == r for g, r in zip(got, reference, strict=True))
            print(f"TOKENS {name}: {same} of {len(reference)} rows as raw's (32 tokens each)", flush=True)
    split.take(a.batch)
    rows: list[dict] = []
    for r in range(a.rounds):
        for name in chosen:
            ps = [encoded(1000 * (r + 1) + i) for i in range(a.batch)]
            variants[name](ps, a.tokens)
            steps = split.take(a.batch)
            row = {"variant": name, "round": r + 1, **summary(steps)}
            rows.append({**row, "steps": steps})
            print("ROUND " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    for name in chosen:
        mine = [row for row in rows if row["variant"] == name]
        print(f"MEDIAN {name} " + " ".join(f"{p}={statistics.median(r[p] for r in mine):.3f}" for p in PARTS))
    if a.json:
        Path(a.json).write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
