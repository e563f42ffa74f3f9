"""mlx-router's batch runner in process, without HTTP: where the server's time goes between raw mlx-lm and a client.

usage: runner_bench.py MODEL_DIR MAX_TOKENS 1,8,32,64 [PROMPT_WORDS] [--dense-rows N]
Loads the model as the server does (same loader, same quantized-layer preparation and backend settings) and
drives a `ModelRunner` from this thread, stepping it as the MLX worker would. For 1 stream it also times mlx-lm's
`generate_step` on the same model and prompt in the same process, so the solo path's cost per token is read
against raw decoding with nothing else differing. Prints one RUNNER line per batch size:
  ttft_ms (first token, prefill included), tps (decode tok/s of the median stream), e2e_tps (all tokens over the
  whole call), and for B=1 raw_tps (generate_step).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from load import prompt

from mlx_router.engine.backend_env import configure_backend

configure_backend(cudnn_attention=False)  # before MLX first runs, as the server does

import mlx.core as mx  # noqa: E402
from mlx_lm.generate import generate_step  # noqa: E402

from mlx_router.core.dense_rows import prepare_quantized_layers  # noqa: E402
from mlx_router.core.loader import load_weights, open_tokenizer  # noqa: E402
from mlx_router.engine.params import GenerationRequest, SamplingParams, TokenEvent  # noqa: E402
from mlx_router.core.runner import ModelRunner, RunnerConfig  # noqa: E402


def raw_decode_tps(model, prompt_tokens: list[int], n: int) -> float:
    """generate_step's decode rate (first token excluded), as stream_generate reports it."""
    t0 = 0.0
    count = 0
    for count, _ in enumerate(generate_step(mx.array(prompt_tokens), model, max_tokens=n), start=1):
        if count == 1:
            t0 = time.perf_counter()
    return (count - 1) / (time.perf_counter() - t0)


def run_batch(runner: ModelRunner, prompts: list[list[int]], n: int) -> dict:
    t0 = time.perf_counter()
    first: dict[str, float] = {}
    done: dict[str, float] = {}
    counts: dict[str, int] = {}

    def emitter(rid: str):
        def emit(event: TokenEvent) -> None:
            now = time.perf_counter()
            if event.tokens and rid not in first:
                first[rid] = now
            counts[rid] = counts.get(rid, 0) + len(event.tokens)
            if event.finish_reason is not None:
                done[rid] = now

        return emit

    for i, p in enumerate(prompts):
        rid = f"r{i}"
        runner.add(GenerationRequest(rid, "m", p, n, SamplingParams(), ignore_eos=True), emitter(rid))
    while len(done) < len(prompts):
        runner.step()
    wall = time.perf_counter() - t0
    rates = [(counts[r] - 1) / (done[r] - first[r]) for r in done if done[r] > first[r]]
    return {
        "ttft_ms": round(1000 * (statistics.median(first.values()) - t0), 1),
        "tps": round(statistics.median(rates), 1),
        "e2e_tps": round(sum(counts.values()) / wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("max_tokens", type=int)
    ap.add_argument("batches")
    ap.add_argument("prompt_words", type=int, nargs="?", default=155)
    ap.add_argument("--dense-rows", type=int, default=None, help="dense_matmul_min_rows (default: as the server)")
    ap.add_argument("--flat-decode", type=int, default=None, help="flat_decode_min_batch (default: as the server)")
    a = ap.parse_args()
    path = Path(a.model)
    tokenizer = open_tokenizer(path)
    model = load_weights("m", path, tokenizer).model
    sizes = [int(x) for x in a.batches.split(",")]
    layers = prepare_quantized_layers(model, a.dense_rows, {}, str(path), a.flat_decode, max(sizes))
    print("layers:", layers or "unchanged", flush=True)
    runner = ModelRunner("m", model, tokenizer, RunnerConfig(max_running=max(sizes), prefix_cache_bytes=0))

    def encoded(i: int) -> list[int]:
        msgs = [{"role": "user", "content": prompt(i, a.prompt_words)}]
        return list(tokenizer.apply_chat_template(msgs, add_generation_prompt=True))

    for b in sizes:
        run_batch(runner, [encoded(10_000 + i) for i in range(b)], 8)  # this shape's first-use compiles
        row = run_batch(runner, [encoded(20_000 * b + i) for i in range(b)], a.max_tokens)
        if b == 1:
            p = encoded(0)
            raw_decode_tps(model, p, 16)
            row["raw_tps"] = round(raw_decode_tps(model, p, a.max_tokens), 1)
            row["tps_again"] = run_batch(runner, [encoded(1)], a.max_tokens)["tps"]
        print(f"RUNNER B={b} " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
