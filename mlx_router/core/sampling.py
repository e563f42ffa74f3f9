"""Per-request samplers and logits processors for mlx-lm's batch generator.

A seeded request samples with its own PRNG key, split once per token, so its output depends only on its seed and
its logits, never on which other requests share the batch. Greedy requests all share one sampler object, and
unseeded requests with the same parameters share one, so the batch samples them in a single call.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    greedy_sampler,
    make_logits_processors,
)

from mlx_router.engine.params import SamplingParams

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


def _filters(p: SamplingParams, vocab_size: int) -> list[Callable[[mx.array], mx.array]]:
    filters: list[Callable[[mx.array], mx.array]] = []
    if 0 < p.top_p < 1.0:
        filters.append(lambda x: apply_top_p(x, p.top_p))
    if p.min_p > 0.0:
        filters.append(lambda x: apply_min_p(x, p.min_p))
    if 0 < p.top_k < vocab_size:
        filters.append(lambda x: apply_top_k(x, p.top_k))
    return filters


class _FilteredSampler:
    """Temperature sampling after top-p/min-p/top-k filters; seeded samplers own their PRNG key."""

    def __init__(self, p: SamplingParams, vocab_size: int) -> None:
        self._filters = _filters(p, vocab_size)
        self._inv_temp = 1.0 / p.temperature
        self._key = mx.random.key(p.seed) if p.seed is not None else None
        self._prev_key = self._key

    def __call__(self, logprobs: mx.array) -> mx.array:
        for f in self._filters:
            logprobs = f(logprobs)
        if self._key is None:
            return mx.random.categorical(logprobs * self._inv_temp)
        self._prev_key = self._key
        self._key, sub = mx.random.split(self._key)
        return mx.random.categorical(logprobs * self._inv_temp, key=sub)

    def rewind(self) -> None:
        """Forget the last draw: the next call samples with the same key again (a request moving from the
        solo path into the batch re-samples one position)."""
        self._key = self._prev_key


class SamplerFactory:
    """Hands out samplers for one model; shares them between requests wherever that is safe."""

    def __init__(self, vocab_size: int) -> None:
        self._vocab_size = vocab_size
        self._shared: dict[tuple[float, float, int, float], Sampler] = {}

    def sampler(self, p: SamplingParams) -> Sampler:
        if p.greedy:
            return greedy_sampler
        if p.seed is not None:
            return _FilteredSampler(p, self._vocab_size)
        key = (p.temperature, p.top_p, p.top_k, p.min_p)
        if key not in self._shared:
            if len(self._shared) > 64:  # bounded: parameters come from clients
                self._shared.clear()
            self._shared[key] = _FilteredSampler(p, self._vocab_size)
        return self._shared[key]


def openai_penalties(prompt_len: int, presence: float, frequency: float) -> LogitsProcessor:
    """OpenAI's presence/frequency penalties, counted over the generated tokens only (not the prompt)."""

    def processor(tokens: mx.array, logits: mx.array) -> mx.array:
        generated = tokens[prompt_len:]
        if generated.size == 0:
            return logits
        counts = mx.zeros((logits.shape[-1],), dtype=logits.dtype).at[generated].add(1)
        penalty = counts * frequency + (counts > 0).astype(logits.dtype) * presence
        return logits - penalty

    return processor


def logits_processors(p: SamplingParams, prompt_len: int) -> list[LogitsProcessor]:
    """The processors a request needs, in the order they apply (bias, repetition, presence/frequency)."""
    procs: list[LogitsProcessor] = list(
        make_logits_processors(
            logit_bias=dict(p.logit_bias) if p.logit_bias else None,
            repetition_penalty=p.repetition_penalty,
            repetition_context_size=64,
        )
    )
    if p.presence_penalty or p.frequency_penalty:
        procs.append(openai_penalties(prompt_len, p.presence_penalty, p.frequency_penalty))
    return procs
