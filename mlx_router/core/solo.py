"""One request decoded alone with a plain KV cache: the fast path when nothing else is running.

A batch of one costs more per token than mlx-lm's single-stream loop (batched caches carry per-row offsets and
an explicit attention mask). So a request that arrives while its model is idle runs here, stepped one chunk or
token at a time by the worker like the batch, and moves into the batch the moment another request arrives.

Moving keeps the output exact: the last emitted token is trimmed from the cache and handed to the batch as
the one prompt token it feeds next; the token already sampled after it is dropped and sampled again by the
batch with the same sampler position (seeded samplers rewind one step; grammar processors skip a context they
have seen), so the request continues as if it had never moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import mlx.core as mx
from mlx_lm.models.cache import TokenBuffer, can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache


@dataclass
class SoloResponse:
    """Shaped like mlx-lm's GenerationBatch.Response, so the runner delivers both alike."""

    uid: int
    token: int
    logprobs: Any
    finish_reason: str | None
    prompt_cache: list[Any] | None
    all_tokens: list[int] | None


@dataclass
class BatchHandover:
    """What `BatchGenerator.insert` needs to continue a solo request."""

    prompt: list[int]
    cache: list[Any]
    all_tokens: list[int]
    max_tokens: int


class SoloSequence:
    """Prefill in chunks, then pipelined decode (next token computed while the current one is delivered)."""

    def __init__(
        self,
        uid: int,
        model: Any,
        prompt: list[int],
        cache: list[Any] | None,
        cached_tokens: list[int],
        sampler: Any,
        processors: list[Any],
        max_tokens: int,
        stop_tokens: frozenset[int],
        prefill_step_size: int,
    ) -> None:
        self.uid = uid
        self._model = model
        self._pending_prompt = list(prompt)
        self._cache = cache if cache is not None else make_prompt_cache(model)
        self._tokens = list(cached_tokens)  # tokens in the KV cache
        self._context = TokenBuffer(list(cached_tokens)) if processors else None
        self._sampler = sampler
        self._processors = processors
        self._max_tokens = max_tokens
        self._stop = stop_tokens
        self._chunk = prefill_step_size
        self._next: tuple[mx.array, mx.array] | None = None  # sampled, not yet delivered
        self.emitted = 0
        self.fresh = True  # not stepped yet: nothing of it has run

    @property
    def prefilled(self) -> bool:
        """The whole prompt but its last token is in the cache, and nothing was sampled yet."""
        return self._next is None and len(self._pending_prompt) <= 1 and self.emitted == 0

    @property
    def pending_prompt(self) -> int:
        """Prompt tokens not yet in the cache."""
        return len(self._pending_prompt)

    @property
    def decoding(self) -> bool:
        """A token was sampled (delivered or in flight)."""
        return self._next is not None or self.emitted > 0

    def cache_nbytes(self) -> int:
        return int(sum(c.nbytes for c in self._cache))

    @staticmethod
    def supported(model: Any) -> bool:
        """Models whose cache can be trimmed by one token (needed to move into the batch)."""
        return can_trim_prompt_cache(make_prompt_cache(model))

    def step(self) -> SoloResponse | None:
        """One prefill chunk (returns None) or one decode step (returns the delivered token)."""
        self.fresh = False
        if len(self._pending_prompt) > 1:
            n = min(self._chunk, len(self._pending_prompt) - 1)
            chunk, self._pending_prompt = self._pending_prompt[:n], self._pending_prompt[n:]
            self._model(mx.array(chunk)[None], cache=self._cache)
            mx.eval([c.state for c in self._cache])
            self._tokens += chunk
            if self._context is not None:
                self._context.update_and_fetch(mx.array(chunk, dtype=mx.int32))
            return None
        if self._next is None:  # the last prompt token: sample the first generated token
            last, self._pending_prompt = self._pending_prompt, []
            self._next = self._feed(mx.array([last[0]], dtype=mx.int32))
            self._tokens.append(last[0])
            return None
        token_arr, logprobs = self._next
        # Queue the next step on the still-lazy token before waiting for it, as mlx-lm's generate_step
        # does: the accelerator never idles while Python builds the next graph.
        following = self._feed(token_arr) if self.emitted + 1 < self._max_tokens else None
        token = int(cast(int, token_arr.item()))
        if following is not None:
            self._tokens.append(token)  # fed above: `_tokens` stays what the KV cache holds
        self.emitted += 1
        finish = "stop" if token in self._stop else ("length" if self.emitted >= self._max_tokens else None)
        self._next = following if finish is None else None
        return SoloResponse(
            uid=self.uid,
            token=token,
            logprobs=logprobs[0],
            finish_reason=finish,
            prompt_cache=self._cache if finish else None,
            all_tokens=list(self._tokens) if finish else None,
        )

    def _feed(self, inputs: mx.array) -> tuple[mx.array, mx.array]:
        """Run one token (a lazy array of shape (1,)) through the model and sample the next one, async."""
        logits = self._model(inputs[None], cache=self._cache)[:, -1, :]
        if self._processors:
            assert self._context is not None
            context = self._context.update_and_fetch(inputs)
            for processor in self._processors:
                logits = processor(context, logits)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        sampled = self._sampler(logprobs)  # shape (1,): fed as is to the next step, read with .item()
        mx.async_eval(sampled, logprobs)
        return sampled, logprobs

    def handover(self) -> BatchHandover:
        """Stop here and describe the request for the batch generator (see the module docstring)."""
        # The batch merges a copy of the cache: this sequence lets go of its own, else it stays held to the end.
        cache, self._cache = self._cache, []
        if self._next is None:  # still in prefill: the batch prefills the rest
            return BatchHandover(self._pending_prompt, cache, list(self._tokens), self._max_tokens - self.emitted)
        mx.eval(self._next[0])  # let the in-flight step finish before trimming the cache under it
        self._next = None
        last = self._tokens.pop()  # delivered and in the cache; the batch feeds it again
        trim_prompt_cache(cache, 1)
        rewind = getattr(self._sampler, "rewind", None)
        if rewind is not None:
            rewind()
        return BatchHandover([last], cache, list(self._tokens), self._max_tokens - self.emitted)
