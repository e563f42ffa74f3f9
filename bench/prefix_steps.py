"""Where a prefix hit's time to first token goes: the second turn of a long chat, in process, step by step.

usage: prefix_steps.py MODEL_DIR [--words 3000] [--convs 3] [--max-tokens 256] [--dense-rows N] [--flat-decode N]
Loads the model as the server does and drives a `ModelRunner` (prefix cache on, burst hold off: the server's
hold and its HTTP side are measured by run_bench.py) from this thread. For each conversation: turn 1 (a long
user message, greedy, `--max-tokens` tokens), then turn 2 = turn 1's prompt, its reply as generated and the
template's tokens for one more short user message, so the hit covers all but those last tokens. Each runner
step of turn 2 before its first token is timed with what it did (a prefill chunk, the last prompt token, a
decode step). Beside it, raw mlx-lm: `generate_step` on turn 1, then on turn 2's remaining tokens with the same
prompt cache (the floor a server could reach), and how many of turn 2's tokens survive re-tokenizing the reply
as text (what a client sends back; a random model's reply often does not survive it).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

from load import prompt

from mlx_router.engine.backend_env import configure_backend

configure_backend(cudnn_attention=False)  # before MLX first runs, as the server does

import mlx.core as mx  # noqa: E402
from mlx_lm.generate import generate_step  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402

from mlx_router.core.dense_rows import prepare_quantized_layers  # noqa: E402
from mlx_router.core.loader import load_weights, open_tokenizer  # noqa: E402
from mlx_router.engine.params import GenerationRequest, SamplingParams, TokenEvent  # noqa: E402
from mlx_router.core.runner import ModelRunner, RunnerConfig  # noqa: E402


def common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Turn:
    """One request through the runner, every step before its first token timed."""

    def __init__(self, runner: ModelRunner, rid: str, tokens: list[int], max_tokens: int) -> None:
        self.tokens: list[int] = []
        self.first: float | None = None
        self.done = False
        self.cached = 0
        self.steps: list[tuple[str, float]] = []
        t0 = time.perf_counter()
        runner.add(GenerationRequest(rid, "m", tokens, max_tokens, SamplingParams(temperature=0.0)), self._emit)
        self.add_ms = 1000 * (time.perf_counter() - t0)
        while not self.done:
            solo = runner._solo
            before = (solo.pending_prompt, solo.decoding) if solo is not None else None
            t = time.perf_counter()
            runner.step()
            dt = 1000 * (time.perf_counter() - t)
            if self.first is None or len(self.steps) < 8:
                self.steps.append((_kind(before), dt))
        self.ttft_ms = 1000 * (self.first - t0) if self.first is not None else -1.0

    def _emit(self, event: TokenEvent) -> None:
        if event.tokens and self.first is None:
            self.first = time.perf_counter()
        if event.cached_tokens:
            self.cached = event.cached_tokens
        self.tokens += event.tokens
        self.done = self.done or event.finish_reason is not None


def _kind(before: tuple[int, bool] | None) -> str:
    if before is None:
        return "batch"
    pending, decoding = before
    if decoding:
        return "decode"
    return f"prefill{pending - 1}" if pending > 1 else "last"


def raw_turns(model, p1: list[int], p2: list[int], n: int) -> tuple[float, float, int]:
    """(turn 1 TTFT ms, turn 2 TTFT ms, tokens turn 2 prefilled) with generate_step and one prompt cache."""
    cache = make_prompt_cache(model)
    t0 = time.perf_counter()
    ttft1 = 0.0
    for i, _ in enumerate(generate_step(mx.array(p1), model, max_tokens=n, prompt_cache=cache)):
        if i == 0:
            ttft1 = 1000 * (time.perf_counter() - t0)
    held = cache[0].offset
    rest = p2[held:]
    t0 = time.perf_counter()
    for _ in generate_step(mx.array(rest), model, max_tokens=2, prompt_cache=cache):
        ttft2 = 1000 * (time.perf_counter() - t0)
        break
    return ttft1, ttft2, len(rest)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--words", type=int, default=3000)
    ap.add_argument("--convs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--dense-rows", type=int, default=None)
    ap.add_argument("--flat-decode", type=int, default=None)
    a = ap.parse_args()
    path = Path(a.model)
    tokenizer = open_tokenizer(path)
    model = load_weights("m", path, tokenizer).model
    layers = prepare_quantized_layers(model, a.dense_rows, {}, str(path), a.flat_decode, 8)
    print("layers:", layers or "unchanged", flush=True)
    runner = ModelRunner("m", model, tokenizer, RunnerConfig(max_running=8))

    def render(msgs: list[dict]) -> str:
        return str(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    Turn(runner, "warm", encode(render([{"role": "user", "content": "hi"}])), 4)
    for conv in range(a.convs):
        msgs = [{"role": "user", "content": prompt(100 + conv, a.words)}]
        text1 = render(msgs)
        p1 = encode(text1)
        t1 = Turn(runner, f"c{conv}t1", p1, a.max_tokens)
        reply = tokenizer.decode(t1.tokens)
        msgs2 = msgs + [{"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]
        text2 = render(msgs2)
        head = text1 + reply
        suffix = encode(text2[len(head) :]) if text2.startswith(head) else encode(text2)[len(p1) :]
        p2 = p1 + t1.tokens + suffix
        retok = common(encode(text2), p2)
        t2 = Turn(runner, f"c{conv}t2", p2, 2)
        steps = " ".join(f"{k}:{ms:.1f}" for k, ms in t2.steps)
        raw1, raw2, raw_rest = raw_turns(model, copy.copy(p1), p2, a.max_tokens)
        print(
            f"PREFIX conv={conv} p1={len(p1)} p2={len(p2)} cached={t2.cached} retok_common={retok} "
            f"turn1_ms={t1.ttft_ms:.1f} turn2_ms={t2.ttft_ms:.1f} ratio={t2.ttft_ms / t1.ttft_ms:.3f} "
            f"add_ms={t2.add_ms:.2f} steps=[{steps}] raw_turn1_ms={raw1:.1f} raw_turn2_ms={raw2:.1f} "
            f"raw_rest={raw_rest} raw_ratio={raw2 / raw1:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
