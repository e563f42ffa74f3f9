"""Warm-up: drive a freshly loaded model's runner through the paths real traffic takes, before any user does.

On CUDA, MLX compiles kernels the first time it meets them, and a compile lands on whatever request first needs
it: seconds for the whole batch (on an H100 with an 8B model, 5 s at the first 8 concurrent prompts and 18 s
when 16 more joined a running batch, bench/RESULTS.md run 5). mlx-lm's `batch_generate` on copies of one short
prompt does not reach those paths: prompts of one length need no padding, a batch started at once never merges
newcomers into running decodes, and short prompts never reach the prefill-sized matmuls. So this goes through
`ModelRunner` itself, which is what requests use:

- alone: the solo path, with a prompt longer than one prefill chunk;
- for each batch size B: B/2 prompts of different lengths, and once those decode, the other half joins them
  (right-padded batched prefill, left-padded decode masks, the batch growing and shrinking); every request of
  the stage keeps decoding until all B decode together for a few steps, then the stage cancels them. A batch
  of B rows can take a path of its own (`flat_decode_min_batch`: one matrix from 32 rows on the 0.5B), and
  requests that stopped after a few tokens left before the last joiners arrived: the batch-32 stage never ran
  more than 24 rows, and the first 32 real streams waited 58 s for that path's compiles (H200, run 7);
- a follow-up turn that hits the prefix cache (a request that starts with a cached KV state).

Each stage is timed; the line the manager logs says where the time went.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx

from mlx_router.engine.params import GenerationRequest, SamplingParams, TokenEvent

# Tokens the batch stages' requests may generate: more than it takes the last joiner to start, since the stage
# cancels them once the whole batch has decoded together for _FULL_BATCH_STEPS steps.
_UNTIL_CANCELLED = 4096
_FULL_BATCH_STEPS = 2


class _Waves:
    """Requests of the warm-up, added in waves and stepped to the end on the calling (MLX) thread."""

    def __init__(self, runner: Any, seed_tokens: list[int], new_tokens: int) -> None:
        self._runner = runner
        self._seed = seed_tokens or [0]
        self._new = max(1, new_tokens)
        self._n = 0
        self.outputs: dict[str, list[int]] = {}
        self._done: set[str] = set()
        self._started: set[str] = set()

    def prompt(self, length: int) -> list[int]:
        """`length` tokens of the seed text, each request starting one token further into it (prompts that
        happen to share a start exercise the prefix cache too)."""
        self._n += 1
        return [self._seed[(self._n + k) % len(self._seed)] for k in range(length)]

    def add(self, prompt: list[int], extra_tokens: int = 0) -> str:
        """A request for `new_tokens + extra_tokens` tokens; its id."""
        rid = f"warmup-{self._n}-{len(self.outputs)}"
        out: list[int] = []
        self.outputs[rid] = out

        def emit(event: TokenEvent, rid: str = rid) -> None:
            out.extend(event.tokens)
            if event.tokens:
                self._started.add(rid)
            if event.finish_reason is not None:
                self._done.add(rid)

        n = self._new + extra_tokens
        req = GenerationRequest(rid, "warmup", prompt, n, SamplingParams(), ignore_eos=True, internal=True)
        self._runner.add(req, emit)
        return rid

    def step_until(self, cond: Callable[[], bool], limit: int = 100_000) -> None:
        for _ in range(limit):
            if cond():
                return
            self._runner.step()
        raise RuntimeError("the warm-up did not finish")

    def all_started(self, rids: list[str]) -> bool:
        return all(r in self._started or r in self._done for r in rids)

    def finish(self) -> None:
        self.step_until(lambda: len(self._done) == len(self.outputs))

    def cancel_rest(self) -> None:
        """End every request of the stage that is still running."""
        for rid in self.outputs:
            if rid not in self._done:
                self._runner.cancel(rid)


def warm_up(
    runner: Any, seed_tokens: list[int], new_tokens: int, batch_sizes: list[int], long_prompt: int
) -> list[tuple[str, float]]:
    """Run the stages (see the module docstring); returns (stage, seconds) pairs. `long_prompt` should exceed
    the runner's prefill chunk so chunked prefill is met too."""
    timings: list[tuple[str, float]] = []

    def stage(name: str, fn: Callable[[_Waves], None]) -> None:
        t0 = time.perf_counter()
        waves = _Waves(runner, seed_tokens, new_tokens)
        fn(waves)
        waves.finish()
        timings.append((name, time.perf_counter() - t0))

    def solo(w: _Waves) -> None:
        w.add(w.prompt(long_prompt))

    stage("solo", solo)
    for size in sorted({b for b in batch_sizes if b > 1}):

        def batch(w: _Waves, size: int = size) -> None:
            first = size // 2
            lead = [w.add(w.prompt(_length(i, long_prompt)), extra_tokens=_UNTIL_CANCELLED) for i in range(first)]
            w.step_until(lambda: w.all_started(lead))
            rest = [w.add(w.prompt(_length(i, long_prompt)), extra_tokens=_UNTIL_CANCELLED) for i in range(first, size)]
            w.step_until(lambda: w.all_started(lead + rest))
            for _ in range(_FULL_BATCH_STEPS):  # all `size` rows decoding together
                runner.step()
            w.cancel_rest()

        stage(f"batch {size}", batch)

    def follow_up(w: _Waves) -> None:
        turn1 = w.prompt(long_prompt // 2)
        rid = w.add(turn1)
        w.finish()
        w.add(turn1 + w.outputs[rid] + turn1[:16])

    stage("prefix hit", follow_up)
    return timings


def warmup_plan(tokens: int | None, sizes: list[int] | None, max_running: int) -> tuple[int, list[int]]:
    """The settings resolved: tokens per warm-up request (0: none) and the batch sizes to run. Unset, the warm-up
    runs on CUDA only (Metal and the CPU compile little or nothing on first use), at 1, 2, 4, ... max_running."""
    if tokens is None:
        tokens = 3 if mx.cuda.is_available() else 0
    if sizes is None:
        sizes = sorted({1 << k for k in range(max_running.bit_length()) if 1 << k <= max_running} | {max_running})
    return tokens, [b for b in sizes if 1 <= b <= max_running]


def _length(i: int, long_prompt: int) -> int:
    """Prompt lengths that differ within a batch (so it pads) and stay short enough to be cheap."""
    return max(8, long_prompt // 8 + (i * 37) % max(long_prompt // 4, 1))
