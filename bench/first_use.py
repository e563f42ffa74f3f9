"""Which kernels compile on first use, and does the warm-up leave any for a user's request? (CUDA)

usage: first_use.py MODEL_DIR KERNEL_CACHE_DIR [--sizes 2,4,8,16,32,64] [--dense-rows 256] [--no-warmup]
Runs in a fresh process with MLX's kernel cache in KERNEL_CACHE_DIR (empty: a fresh machine; reused: a restart).
Loads the model as the server does, runs the warm-up (core/warmup.py) stage by stage, then traffic the warm-up
did not see exactly: mixed-length prompts at once, waves joining a running batch, batch sizes not warmed. For
each stage and scenario it prints the time, the longest single runner step, and the kernel modules MLX compiled
(new files in the cache), e.g.
  STAGE name=batch_8 s=4.21 new_modules=3 names=qmm_sm80_...,gather_...
  SCEN name=waves_32 s=9.1 max_step_ms=5012 ttft_p50_ms=310 new_modules=1 names=...
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("cache_dir")
ap.add_argument("--sizes", default="2,4,8,16,32,64")
ap.add_argument("--dense-rows", type=int, default=256)
ap.add_argument("--no-warmup", action="store_true")
ap.add_argument("--max-tokens", type=int, default=24)
a = ap.parse_args()
os.environ["MLX_PTX_CACHE_DIR"] = a.cache_dir
os.environ.setdefault("MLX_CUDA_USE_CUDNN_SDPA", "0")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import prompt  # noqa: E402

from mlx_router.core import warmup  # noqa: E402
from mlx_router.core.dense_rows import prepare_quantized_layers  # noqa: E402
from mlx_router.core.loader import load_weights, open_tokenizer  # noqa: E402
from mlx_router.engine.params import GenerationRequest, SamplingParams, TokenEvent  # noqa: E402
from mlx_router.core.runner import ModelRunner, RunnerConfig  # noqa: E402


def modules() -> set[str]:
    root = Path(a.cache_dir)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def report(kind: str, name: str, seconds: float, before: set[str], **extra) -> None:
    new = sorted(modules() - before)
    names = ",".join(Path(n).name[:60] for n in new[:12])
    fields = " ".join(f"{k}={v}" for k, v in extra.items())
    print(f"{kind} name={name} s={seconds:.2f} {fields} new_modules={len(new)} names={names}", flush=True)


path = Path(a.model)
tokenizer = open_tokenizer(path)
t0 = time.perf_counter()
before = modules()
model = load_weights("m", path, tokenizer).model
layers = prepare_quantized_layers(model, a.dense_rows, {}, str(path), None, max(int(x) for x in a.sizes.split(",")))
report("STAGE", "load", time.perf_counter() - t0, before, layers=layers.split(" ")[0] if layers else 0)
runner = ModelRunner("m", model, tokenizer, RunnerConfig(max_running=64, prefix_cache_bytes=2 * 1024**3))

if not a.no_warmup:
    # The warm-up, one stage at a time, to see what each compiles.
    seed = tokenizer.encode("Hello, who are you? Tell me about the weather and the sea.")
    sizes = [int(x) for x in a.sizes.split(",") if x]
    t_all = time.perf_counter()
    for stage_sizes in [[1]] + [[s] for s in sizes]:
        before = modules()
        t0 = time.perf_counter()
        stages = warmup.warm_up(runner, seed, 3, stage_sizes, long_prompt=600)
        label = "solo+prefix" if stage_sizes == [1] else f"batch_{stage_sizes[0]}"
        report("STAGE", label, time.perf_counter() - t0, before, parts="/".join(f"{s:.1f}" for _, s in stages))
    runner.forget_history()
    print(f"WARMUP total_s={time.perf_counter() - t_all:.1f}", flush=True)


def encoded(i: int) -> list[int]:
    msgs = [{"role": "user", "content": prompt(i, 155)}]
    return list(tokenizer.apply_chat_template(msgs, add_generation_prompt=True))


def scenario(name: str, waves: list[int], gap_steps: int, base: int) -> None:
    """`waves` requests at a time, the next wave `gap_steps` runner steps after the previous one."""
    before = modules()
    first: dict[str, float] = {}
    done: set[str] = set()
    added: dict[str, float] = {}
    t0 = time.perf_counter()
    max_step = 0.0
    n = 0
    for w, count in enumerate(waves):
        for _ in range(count):
            rid = f"{name}-{n}"

            def emit(event: TokenEvent, rid: str = rid) -> None:
                if event.tokens and rid not in first:
                    first[rid] = time.perf_counter()
                if event.finish_reason is not None:
                    done.add(rid)

            added[rid] = time.perf_counter()
            req = GenerationRequest(rid, "m", encoded(base + n), a.max_tokens, SamplingParams(), ignore_eos=True)
            runner.add(req, emit)
            n += 1
        steps = gap_steps if w < len(waves) - 1 else 10**9
        for _ in range(steps):
            if len(done) == n:
                break
            s0 = time.perf_counter()
            runner.step()
            max_step = max(max_step, time.perf_counter() - s0)
    ttft = statistics.median(first[r] - added[r] for r in first)
    report(
        "SCEN",
        name,
        time.perf_counter() - t0,
        before,
        max_step_ms=round(1000 * max_step),
        ttft_p50_ms=round(1000 * ttft),
    )


scenario("solo", [1], 0, 100)
scenario("mixed_8", [8], 0, 200)
scenario("mixed_8_again", [8], 0, 300)
scenario("waves_32", [8, 8, 8, 8], 6, 400)
scenario("mixed_24", [24], 0, 500)
scenario("waves_64", [16, 16, 16, 16], 4, 600)
scenario("mixed_40", [40], 0, 700)
scenario("trickle_12", [1] * 12, 2, 800)
