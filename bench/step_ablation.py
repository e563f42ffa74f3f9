"""Where mlx-router's decode step differs from raw mlx-lm's, in one process: one difference added at a time.

usage: step_ablation.py MODEL_DIR [--batch 8] [--tokens 256] [--repeats 2] [--words 155] [--dense-rows N]
                         [--flat-decode N] [--only raw,layers-runner]

Every variant generates `--batch` prompts together (load.py's prompts, greedy, EOS ignored) and is timed by one
clock: mlx-lm's `GenerationBatch.next` is wrapped, so each decode step of the full batch is measured the same way
whoever drives it, beside the wall time between two steps (which adds what the driver does around the step).
  raw     mlx-lm's BatchGenerator as `batch_generate` drives it, on `mlx_lm.load`'s model
  loader  the same on mlx-router's loader's model
  rows    + a stream of its own, per-row samplers, logits processors and stop sequences, the runner's groups
  runner  ModelRunner itself (solo path on, prompts added at once), events pickled once a step as the engine
          process sends them
  layers  raw and runner again after `prepare_quantized_layers` as the server prepares the model
The variants run in turn, `--repeats` rounds, so a drift of the machine shows as a drift of every variant.
Prints one STEP line per run: median / p10 / p90 decode ms of the full-batch steps, median wall ms a step.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time
from pathlib import Path

from load import prompt

from mlx_router.engine.backend_env import configure_backend

configure_backend(cudnn_attention=False)  # before MLX first runs, as the server does

import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402
from mlx_lm.generate import BatchGenerator, GenerationBatch, StopSequences  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402

from mlx_router.core.dense_rows import prepare_quantized_layers  # noqa: E402
from mlx_router.core.loader import load_weights, open_tokenizer  # noqa: E402
from mlx_router.engine.params import GenerationRequest, SamplingParams, TokenEvent  # noqa: E402
from mlx_router.core.runner import ModelRunner, RunnerConfig  # noqa: E402
from mlx_router.engine.wire import event_tuple  # noqa: E402


class StepClock:
    """Wraps GenerationBatch.next: (rows, seconds inside, seconds since the previous step ended) per call."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, float, float]] = []
        self._last_end = 0.0
        inner = GenerationBatch.next
        clock = self

        def timed(batch):  # type: ignore[no-untyped-def]
            rows = len(batch.uids)
            t0 = time.perf_counter()
            out = inner(batch)
            t1 = time.perf_counter()
            clock.steps.append((rows, t1 - t0, t1 - clock._last_end if clock._last_end else 0.0))
            clock._last_end = t1
            return out

        GenerationBatch.next = timed  # type: ignore[method-assign]

    def take(self, rows: int) -> dict[str, float]:
        full = [s for s in self.steps if s[0] == rows]
        self.steps = []
        self._last_end = 0.0
        inside = sorted(1000 * s[1] for s in full)
        walls = sorted(1000 * s[2] for s in full if s[2] > 0)
        if not inside:
            return {"steps": 0}
        q = statistics.quantiles(inside, n=10) if len(inside) > 1 else [inside[0]] * 9
        return {
            "steps": len(full),
            "decode_p50": round(statistics.median(inside), 2),
            "p10": round(q[0], 2),
            "p90": round(q[-1], 2),
            "wall_p50": round(statistics.median(walls), 2) if walls else 0.0,
        }


def raw_batch(model, eos: list[int], prompts: list[list[int]], n: int, rows: bool) -> None:
    """BatchGenerator driven as batch_generate does; `rows`: with the runner's per-row arguments."""
    if not rows:
        gen = BatchGenerator(model, stop_tokens=[[t] for t in eos])
        gen.insert(prompts, [n] * len(prompts))
    else:
        gen = BatchGenerator(
            model,
            stop_tokens=[[t] for t in eos],
            completion_batch_size=max(32, len(prompts)),
            prefill_batch_size=8,
            prefill_step_size=512,
            stream=mx.new_stream(mx.default_device()),
        )
        greedy = make_sampler(0.0)
        k = len(prompts)
        gen.insert(
            prompts,
            [n] * k,
            samplers=[greedy] * k,
            logits_processors=[[] for _ in range(k)],
            stop_sequences=[StopSequences() for _ in range(k)],
        )
    while gen.next_generated():
        pass
    gen.close()


def runner_batch(runner: ModelRunner, prompts: list[list[int]], n: int) -> None:
    events: list[tuple[str, tuple]] = []
    done: set[str] = set()

    def emitter(rid: str):  # type: ignore[no-untyped-def]
        def emit(event: TokenEvent) -> None:
            events.append((rid, event_tuple(event)))
            if event.finish_reason is not None:
                done.add(rid)

        return emit

    for i, p in enumerate(prompts):
        rid = f"r{i}"
        runner.add(GenerationRequest(rid, "m", p, n, SamplingParams(), ignore_eos=True), emitter(rid))
    while len(done) < len(prompts):
        runner.step()
        if events:
            pickle.dumps(("events", events), protocol=pickle.HIGHEST_PROTOCOL)
            events = []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--words", type=int, default=155)
    ap.add_argument("--dense-rows", type=int, default=None, help="dense_matmul_min_rows (default: as the server)")
    ap.add_argument("--flat-decode", type=int, default=None, help="flat_decode_min_batch (default: as the server)")
    ap.add_argument("--only", default="", help="run only these variants (e.g. raw,layers-runner)")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else None
    path = Path(a.model)
    clock = StepClock()
    raw_model, raw_tok = mlx_lm.load(str(path))
    tokenizer = open_tokenizer(path)
    model = load_weights("m", path, tokenizer).model
    eos = sorted(int(t) for t in tokenizer.eos_token_ids)
    runner = ModelRunner("m", model, tokenizer, RunnerConfig(max_running=max(32, a.batch), prefix_cache_bytes=0))

    def encoded(i: int) -> list[int]:
        msgs = [{"role": "user", "content": prompt(i, a.words)}]
        return list(tokenizer.apply_chat_template(msgs, add_generation_prompt=True))

    variants = {
        "raw": lambda ps, n: raw_batch(raw_model, eos, ps, n, rows=False),
        "loader": lambda ps, n: raw_batch(model, eos, ps, n, rows=False),
        "rows": lambda ps, n: raw_batch(model, eos, ps, n, rows=True),
        "runner": lambda ps, n: runner_batch(runner, ps, n),
    }
    first = {k: v for k, v in variants.items() if only is None or k in only}
    second = [k for k in ("loader", "runner") if only is None or f"layers-{k}" in only]
    seed = 0

    def run(name: str, fn) -> None:  # type: ignore[no-untyped-def]
        nonlocal seed
        seed += 1
        fn([encoded(1000 * seed + i) for i in range(a.batch)], a.tokens)
        row = clock.take(a.batch)
        print(f"STEP {name} B={a.batch} " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    for name, fn in first.items():  # first-use compiles of every variant's shapes
        fn([encoded(i) for i in range(a.batch)], 8)
    clock.take(a.batch)
    for _ in range(a.repeats):
        for name, fn in first.items():
            run(name, fn)
    if not second:
        return
    layers = prepare_quantized_layers(model, a.dense_rows, {}, str(path), a.flat_decode, max(32, a.batch))
    print("layers:", layers or "unchanged", flush=True)
    for name in second:
        variants[name]([encoded(i) for i in range(a.batch)], 8)
    clock.take(a.batch)
    for _ in range(a.repeats):
        for name in second:
            run(f"layers-{name}", variants[name])


if __name__ == "__main__":
    main()
