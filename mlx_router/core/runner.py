"""One loaded model's continuous batch: requests join at the next step and leave when done.

Runs only on the MLX worker thread. Built on mlx-lm's `BatchGenerator`, which prefills new prompts in chunks of
`prefill_step_size` between decode steps (so running streams keep flowing) and decodes every running request
in one batched forward pass. Each request keeps its own sampler, logits processors (penalties, grammar) and
`max_tokens`, so it gets what it would get alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, StopSequences
from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache

from mlx_router.core.params import GenerationRequest, TokenEvent, TokenLogprob
from mlx_router.core.sampling import SamplerFactory, logits_processors
from mlx_router.core.solo import SoloSequence
from mlx_router.errors import RequestTimeoutError

logger = logging.getLogger(__name__)

Emit = Callable[[TokenEvent], None]


@dataclass(frozen=True)
class RunnerConfig:
    max_running: int = 32
    prefill_batch: int = 8
    prefill_step_size: int = 512
    prefix_cache_bytes: int = 2 * 1024**3
    prefix_cache_entries: int = 64
    solo_path: bool = True
    prefill_step_seconds: float = 0.1  # time one prefill step may take while streams wait for their next token


@dataclass
class _Active:
    req: GenerationRequest
    emit: Emit
    uid: int
    cached_tokens: int
    started: bool = False
    generated: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class ModelRunner:
    """Schedules the requests of one model on its batch generator."""

    def __init__(
        self,
        model_id: str,
        model: Any,
        tokenizer: Any,
        config: RunnerConfig,
        grammar_processor: Callable[[str], Any] | None = None,
    ) -> None:
        self.model_id = model_id
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self._grammar_processor = grammar_processor
        self._samplers = SamplerFactory(vocab_size=_vocab_size(model, tokenizer))
        # A stream of its own, as mlx-lm's generate_step uses: on the thread's default stream the same
        # decode loop ran 30-40% slower (measured on CPU; see bench/RESULTS.md).
        self._stream = mx.new_stream(mx.default_device())
        self._gen = BatchGenerator(
            model,
            stop_tokens=[[t] for t in sorted(tokenizer.eos_token_ids)],
            completion_batch_size=config.max_running,
            prefill_batch_size=min(config.prefill_batch, config.max_running),
            prefill_step_size=config.prefill_step_size,
            stream=self._stream,
        )
        self._eos_ids = frozenset(int(t) for t in tokenizer.eos_token_ids)
        self._eos = StopSequences([[t] for t in sorted(self._eos_ids)])
        self._no_stop = StopSequences()
        self._by_uid: dict[int, _Active] = {}
        self._by_request: dict[str, int] = {}
        self._prefix = (
            LRUPromptCache(max_size=config.prefix_cache_entries, max_bytes=config.prefix_cache_bytes)
            if config.prefix_cache_bytes > 0
            else None
        )
        self._counts = (0, 0)
        self._kv_bytes = 0
        self._prefix_bytes = 0
        self._steps = 0
        self._prefill_rate: float | None = None  # prompt tokens per second, measured
        self._solo: SoloSequence | None = None
        self._solo_ok = config.solo_path and SoloSequence.supported(model)
        self._solo_uids = 0

    # -- queries -------------------------------------------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self._by_uid)

    def counts(self) -> tuple[int, int]:
        """(running, waiting): requests decoding, and requests queued or still in prefill.

        Safe from any thread: a snapshot the worker refreshes as it goes.
        """
        return self._counts

    def prefix_bytes(self) -> int:
        """Bytes held by the prefix cache (snapshot, any thread)."""
        return self._prefix_bytes

    def kv_bytes(self) -> int:
        """Bytes held by the KV caches of the batch and of the prefix cache (snapshot, any thread)."""
        return self._kv_bytes

    def _refresh_stats(self) -> None:
        running = sum(1 for a in self._by_uid.values() if a.started)
        self._counts = (running, len(self._by_uid) - running)
        self._prefix_bytes = int(self._prefix.nbytes) if self._prefix is not None else 0
        solo = self._solo.cache_nbytes() if self._solo is not None else 0
        self._kv_bytes = int(self._gen.prompt_cache_nbytes) + self._prefix_bytes + solo

    # -- commands (worker thread) --------------------------------------------------------------------------
    def add(self, req: GenerationRequest, emit: Emit) -> None:
        """Queue a request; its first events come from a later `step`."""
        prompt = list(req.prompt_tokens)
        processors = logits_processors(req.sampling, len(prompt))
        if req.grammar is not None:
            if self._grammar_processor is None:
                raise ValueError("constrained decoding is not available for this model")
            processors.append(self._grammar_processor(req.grammar))
        cache, rest = self._fetch_prefix(prompt)
        cached = len(prompt) - len(rest)
        sampler = self._samplers.sampler(req.sampling)
        # A grammar ends on EOS: ignoring it would fill the output with EOS up to max_tokens.
        keep_going = req.ignore_eos and req.grammar is None
        if self._solo_ok and self._solo is None and not self._by_uid:
            self._solo_uids -= 1
            uid = self._solo_uids  # negative: never collides with the batch generator's ids
            self._solo = SoloSequence(
                uid, self.model, rest, cache, prompt[:cached], sampler, processors, req.max_tokens,
                frozenset() if keep_going else self._eos_ids, self.config.prefill_step_size,
            )
        else:
            self._move_solo_to_batch()
            (uid,) = self._gen.insert(
                [rest],
                [req.max_tokens],
                caches=[cache] if cache is not None else None,
                all_tokens=[prompt[:cached]],
                samplers=[sampler],
                logits_processors=[processors],
                stop_sequences=[self._no_stop if keep_going else self._eos],
            )
        self._by_uid[uid] = _Active(req=req, emit=emit, uid=uid, cached_tokens=cached,
                                    extra={"sampler": sampler, "processors": processors, "keep_going": keep_going})
        self._by_request[req.request_id] = uid
        self._refresh_stats()

    def _move_solo_to_batch(self) -> None:
        """Another request arrived: the solo request continues in the batch, exactly where it was."""
        solo, self._solo = self._solo, None
        if solo is None:
            return
        active = self._by_uid.pop(solo.uid)
        with mx.stream(self._stream):
            hand = solo.handover()
        (uid,) = self._gen.insert(
            [hand.prompt],
            [hand.max_tokens],
            caches=[hand.cache],
            all_tokens=[hand.all_tokens],
            samplers=[active.extra["sampler"]],
            logits_processors=[active.extra["processors"]],
            stop_sequences=[self._no_stop if active.extra["keep_going"] else self._eos],
        )
        active.uid = uid
        self._by_uid[uid] = active
        self._by_request[active.req.request_id] = uid

    def cancel(self, request_id: str, reason: str = "cancelled") -> None:
        """Drop a request wherever it is (queued, prefilling, decoding); frees its batch slot now."""
        uid = self._by_request.pop(request_id, None)
        if uid is None:
            return
        if self._solo is not None and self._solo.uid == uid:
            self._solo = None
        else:
            self._gen.remove([uid])
        active = self._by_uid.pop(uid)
        self._refresh_stats()
        if reason == "timeout":
            error = RequestTimeoutError("the request ran past the server's timeout")
            active.emit(TokenEvent(tokens=[], finish_reason="error", error=error))
        else:
            active.emit(TokenEvent(tokens=[], finish_reason="cancelled"))

    def cancel_all(self, error: BaseException) -> None:
        self._solo = None
        for request_id, uid in list(self._by_request.items()):
            active = self._by_uid[uid]
            if uid >= 0:
                self._gen.remove([uid])
            self._by_uid.pop(uid, None)
            self._by_request.pop(request_id, None)
            active.emit(TokenEvent(tokens=[], finish_reason="error", error=error))
        self._refresh_stats()

    def step(self) -> None:
        """One decode step for every running request, plus one prefill chunk for waiting prompts."""
        self._drop_expired()
        if not self._by_uid:
            return
        if self._solo is not None:
            self._step_solo(self._solo)
            return
        self._gen.prefill_batch_size = self._prefill_batch()
        counters = getattr(self._gen, "_counters", None)  # mlx-lm's own prefill timing
        before = (counters.prompt_tokens, counters.prompt_time) if counters is not None else None
        _, responses = self._gen.next()
        if before is not None and counters.prompt_tokens > before[0]:
            rate = (counters.prompt_tokens - before[0]) / max(1e-6, counters.prompt_time - before[1])
            self._prefill_rate = rate if self._prefill_rate is None else 0.8 * self._prefill_rate + 0.2 * rate
        self._steps += 1
        if not responses:
            self._refresh_stats()
            return
        logprob_rows = [r for r in responses if self._wants_logprobs(r.uid)]
        logprobs = self._logprobs(logprob_rows)
        for r in responses:
            active = self._by_uid.get(r.uid)
            if active is None:
                continue
            self._deliver(active, r, logprobs.get(r.uid))
        if self._steps % 8 == 0 or any(r.finish_reason for r in responses):
            self._refresh_stats()

    def _prefill_batch(self) -> int:
        """How many waiting prompts to prefill together: as many as fit in `prefill_step_seconds` at the
        measured prefill speed (before a measurement: about `prefill_step_size` tokens).

        Prefill is compute-bound: on a big model grouping long prompts saves little while each prompt of the
        group waits for the slowest, so they go one after another and the first ones start sooner; a small
        model prefills several in the same time, which shortens the ramp-up of a burst.
        """
        waiting = [len(a.req.prompt_tokens) - a.cached_tokens for a in self._by_uid.values() if not a.started]
        if not waiting:
            return self.config.prefill_batch
        typical = max(1, sum(waiting) // len(waiting))
        budget = self.config.prefill_step_size
        if self._prefill_rate is not None:
            budget = int(self._prefill_rate * self.config.prefill_step_seconds)
        return max(1, min(self.config.prefill_batch, budget // typical))

    def _step_solo(self, solo: SoloSequence) -> None:
        with mx.stream(self._stream):
            r = solo.step()
        if r is None:
            return
        if r.finish_reason is not None:
            self._solo = None
        active = self._by_uid.get(r.uid)
        if active is not None:
            logprob = self._logprobs([r]).get(r.uid) if active.req.logprobs is not None else None
            self._deliver(active, r, logprob)

    def close(self) -> None:
        self._gen.close()
        self._prefix = None

    # -- internals -----------------------------------------------------------------------------------------
    def _deliver(self, active: _Active, r: Any, logprob: TokenLogprob | None) -> None:
        finish = r.finish_reason
        # The EOS token that ends a request is not part of the answer.
        tokens = [] if finish == "stop" else [r.token]
        active.generated += len(tokens)
        event = TokenEvent(
            tokens=tokens,
            logprobs=[logprob] if (logprob is not None and tokens) else None,
            finish_reason=finish,
        )
        if not active.started:
            active.started = True
            self._refresh_stats()
            event.prompt_tokens = len(active.req.prompt_tokens)
            event.cached_tokens = active.cached_tokens
        if finish is not None:
            self._by_uid.pop(active.uid, None)
            self._by_request.pop(active.req.request_id, None)
            self._store_prefix(r.all_tokens, r.prompt_cache)
        active.emit(event)

    def _wants_logprobs(self, uid: int) -> bool:
        active = self._by_uid.get(uid)
        return active is not None and active.req.logprobs is not None

    def _logprobs(self, rows: list[Any]) -> dict[int, TokenLogprob]:
        if not rows:
            return {}
        chosen = mx.stack([r.logprobs[r.token] for r in rows])
        tops: list[tuple[Any, Any] | None] = []
        for r in rows:
            k = self._by_uid[r.uid].req.logprobs or 0
            if k > 0:
                idx = mx.argpartition(-r.logprobs, kth=k - 1)[:k]
                tops.append((idx, r.logprobs[idx]))
            else:
                tops.append(None)
        mx.eval(chosen, [t for t in tops if t is not None])
        out: dict[int, TokenLogprob] = {}
        for r, c, top in zip(rows, chosen.tolist(), tops):
            pairs: list[tuple[int, float]] = []
            if top is not None:
                pairs = sorted(zip(top[0].tolist(), top[1].tolist()), key=lambda x: -x[1])
            out[r.uid] = TokenLogprob(token=r.token, logprob=c, top=pairs)
        return out

    def _fetch_prefix(self, prompt: list[int]) -> tuple[list[Any] | None, list[int]]:
        if self._prefix is None or len(prompt) < 2:
            return None, prompt
        cache, rest = self._prefix.fetch_nearest_cache(self.model_id, prompt)
        if cache is None:
            return None, prompt
        if not rest:
            # An exact hit still needs one token to compute the first logits from.
            if not can_trim_prompt_cache(cache):
                return None, prompt
            trim_prompt_cache(cache, 1)
            rest = prompt[-1:]
        return cache, rest

    def _store_prefix(self, tokens: list[int] | None, cache: list[Any] | None) -> None:
        if self._prefix is None or not tokens or cache is None:
            return
        # A cache extracted from the batch is a lazy slice of the whole batch's KV buffer: evaluate it now,
        # or every stored entry keeps a full batch buffer alive (which ran an 80 GB GPU out of memory).
        mx.eval([c.state for c in cache])
        self._prefix.insert_cache(self.model_id, list(tokens), cache)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for active in list(self._by_uid.values()):
            deadline = active.req.deadline
            if deadline is not None and now > deadline:
                logger.info("request %s ran past its deadline", active.req.request_id)
                self.cancel(active.req.request_id, reason="timeout")


def _vocab_size(model: Any, tokenizer: Any) -> int:
    args = getattr(model, "args", None)
    size = getattr(args, "vocab_size", None)
    return int(size) if isinstance(size, int) else len(tokenizer)
