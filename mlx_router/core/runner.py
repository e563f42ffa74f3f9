"""One loaded model's continuous batch: requests join at the next step and leave when done.

Runs only on the MLX worker thread. Two places a request can be:

- **solo**: alone on an idle model it is prefilled and decoded with a plain KV cache (`SoloSequence`), mlx-lm's
  fastest single-stream loop; when another request arrives it moves into the batch, token-exact;
- **in the batch**: mlx-lm's `BatchGenerator` prefills waiting prompts together, up to `prefill_batch_tokens`
  prompt tokens (`prefill_step_size` per prompt) between two decode steps, so running streams keep flowing,
  and decodes every prefilled request in one forward pass per step. A batched prefill needs an attention mask
  array; on CUDA, cuDNN's attention would build a plan for each new shape of it (0.7-1.1 s measured on an
  H100), so `cudnn_attention` is off by default (mlx_router/engine/backend_env.py).

Each request keeps its own sampler, logits processors (penalties, grammar) and `max_tokens`, so it gets what it
would get alone.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.generate import StopSequences
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

from mlx_router.core.holds import Newcomer, burst_hold, gathering
from mlx_router.core.logprobs import token_logprobs
from mlx_router.core.prefix_cache import PrefixCache
from mlx_router.core.sampling import SamplerFactory, logits_processors
from mlx_router.core.solo import BatchHandover, SoloSequence
from mlx_router.core.step_stats import StepStats, trace_added, trace_step
from mlx_router.core.vision_prefill import ShiftingBatchGenerator, VisionSequence, cut_to_image_start, image_keys
from mlx_router.engine.params import GenerationRequest, TokenEvent, TokenLogprob
from mlx_router.errors import InvalidRequestError, RequestTimeoutError
from mlx_router.vision.adapter import VisionAdapter

logger = logging.getLogger(__name__)

Emit = Callable[[TokenEvent], None]


@dataclass(frozen=True)
class RunnerConfig:
    max_running: int = 32
    prefill_step_size: int = 512
    prefix_cache_bytes: int = 2 * 1024**3
    prefix_cache_entries: int = 64
    prefix_min_tokens: int = 32  # shorter cached prefixes are not worth copying a cache for
    prefix_bytes_per_token: int = 0  # > 0: prefix entries counted by tokens, the same on every rank of a group
    solo_path: bool = True
    prefill_batch_tokens: int = 4096  # prompt tokens prefilled together between two decode steps
    prefill_gather_ms: float = 0.0  # while the batch decodes, hold newcomers this long to prefill them together
    idle_gather_ms: float = 0.0  # a request that finds the model idle waits this long for the rest of its burst
    idle_gather_min_tokens: int = 64  # ... unless fewer prompt tokens than this are left to prefill


@dataclass
class _Active:
    req: GenerationRequest
    emit: Emit
    seq: SoloSequence | VisionSequence  # its prefill (and solo decoding); kept for its sampler and processors
    uid: int  # negative while solo or waiting, the batch generator's id once in the batch
    cached_tokens: int
    sampler: Any
    processors: list[Any]
    stop: StopSequences
    started: bool = False
    added: float = 0.0  # time.perf_counter() when the runner took it
    first_token_ms: float = 0.0
    scheduled: float = 0.0  # time.perf_counter() when its prefill could begin (it left the queue)
    generated: int = 0
    keys: list[int] | None = None  # a prompt with images: its prefix-cache key (`vision_prefill.image_keys`)


class ModelRunner:
    """Schedules the requests of one model: solo, prefilling, or in the batch."""

    def __init__(
        self,
        model_id: str,
        model: Any,
        tokenizer: Any,
        config: RunnerConfig,
        grammar_processor: Callable[[str], Any] | None = None,
        vision: VisionAdapter | None = None,
        stream: Any = None,
    ) -> None:
        self.model_id = model_id
        self.vision = vision
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self._grammar_processor = grammar_processor
        self._samplers = SamplerFactory(vocab_size=_vocab_size(model, tokenizer))
        # A stream of its own, as mlx-lm's generate_step has: the same decode loop on the thread's default
        # stream measured slower.
        # In a distributed group, the group's stream (`core/group.py`): its collective operations stay in order.
        self._stream = stream if stream is not None else mx.new_stream(mx.default_device())
        self._prefill_group = max(1, config.prefill_batch_tokens // config.prefill_step_size)  # prompts at once
        self._gen = ShiftingBatchGenerator(
            model,
            stop_tokens=[[t] for t in sorted(tokenizer.eos_token_ids)],
            completion_batch_size=config.max_running,
            prefill_batch_size=self._prefill_group,
            prefill_step_size=config.prefill_step_size,
            stream=self._stream,
        )
        self._eos_ids = frozenset(int(t) for t in tokenizer.eos_token_ids)
        self._eos = StopSequences([[t] for t in sorted(self._eos_ids)])
        self._no_stop = StopSequences()
        self._by_uid: dict[int, _Active] = {}
        self._by_request: dict[str, int] = {}
        self._solo: SoloSequence | None = None
        self._waiting: deque[SoloSequence] = deque()
        self._reading: deque[VisionSequence] = deque()  # prompts with images, prefilled one unit a step
        self._in_batch = 0
        self._prefilling: set[int] = set()  # batch ids whose prompt the batch generator still holds
        self._splitting = False  # the last step ended some prompts' prefill; the next one moves them on
        self._solo_ok = config.solo_path and SoloSequence.supported(model)
        self._next_uid = 0
        self._prefix = self._new_prefix_cache()
        self._counts = (0, 0)
        self._kv_bytes = 0
        self._prefix_bytes = 0
        self._steps = 0
        self._stats_stale = False
        self.stats = StepStats(model_id)

    # -- queries (any thread: snapshots the worker refreshes) ----------------------------------------------
    def has_work(self) -> bool:
        return bool(self._by_uid)

    def ready_in(self) -> float:
        """Seconds until a step has something to do: 0 unless an idle model's newcomers are held for their burst."""
        return self._burst_hold()

    def counts(self) -> tuple[int, int]:
        """(running, waiting): requests decoding, and requests queued or still in prefill."""
        return self._counts

    def prefix_bytes(self) -> int:
        return self._prefix_bytes

    def kv_bytes(self) -> int:
        """Bytes held by KV caches: the batch, the requests outside it, and the prefix cache."""
        return self._kv_bytes

    def _new_prefix_cache(self) -> PrefixCache | None:
        c = self.config
        if c.prefix_cache_bytes <= 0:
            return None
        return PrefixCache(
            self.model_id, c.prefix_cache_bytes, c.prefix_cache_entries, c.prefix_min_tokens, c.prefix_bytes_per_token
        )

    def _refresh_stats(self) -> None:
        self._stats_stale = False
        running = sum(1 for a in self._by_uid.values() if a.started)
        self._counts = (running, len(self._by_uid) - running)
        self._prefix_bytes = self._prefix.nbytes if self._prefix is not None else 0
        outside = sum(s.cache_nbytes() for s in self._waiting) + sum(s.cache_nbytes() for s in self._reading)
        outside += self._solo.cache_nbytes() if self._solo is not None else 0
        features = self.vision.features.nbytes if self.vision is not None else 0  # image features kept by content
        self._kv_bytes = int(self._gen.prompt_cache_nbytes) + self._prefix_bytes + outside + features

    # -- commands (worker thread) --------------------------------------------------------------------------
    def add(self, req: GenerationRequest, emit: Emit) -> None:
        """Take a request; its first events come from a later `step`."""
        prompt = list(req.prompt_tokens)
        processors = logits_processors(req.sampling, len(prompt))
        if req.grammar is not None:
            if self._grammar_processor is None:
                raise ValueError("constrained decoding is not available for this model")
            processors.append(self._grammar_processor(req.grammar))
        sampler = self._samplers.sampler(req.sampling)
        # A grammar ends on EOS: ignoring it would fill the output with EOS up to max_tokens.
        keep_going = req.ignore_eos and req.grammar is None
        self._next_uid -= 1
        if req.images:
            self._add_with_images(req, emit, prompt, sampler, processors, keep_going)
            return
        cache, rest = self._prefix.fetch(prompt) if self._prefix is not None else (None, prompt)
        cached = len(prompt) - len(rest)
        seq = SoloSequence(
            self._next_uid,
            self.model,
            rest,
            cache,
            prompt[:cached],
            sampler,
            processors,
            req.max_tokens,
            frozenset() if keep_going else self._eos_ids,
            self.config.prefill_step_size,
        )
        active = _Active(
            req,
            emit,
            seq,
            seq.uid,
            cached,
            sampler,
            processors,
            self._no_stop if keep_going else self._eos,
            added=time.perf_counter(),
        )
        if self._solo_ok and not self._by_uid:
            self._solo = seq
            active.scheduled = active.added
        else:
            self._end_solo()
            self._waiting.append(seq)
        self._by_uid[active.uid] = active
        self._by_request[req.request_id] = active.uid
        self._refresh_stats()
        trace_added(req, cached, "solo" if self._solo is seq else "waits", len(self._waiting), self._in_batch)

    def _add_with_images(
        self, req: GenerationRequest, emit: Emit, prompt: list[int], sampler: Any, processors: list[Any], keep: bool
    ) -> None:
        """A prompt with images: prefilled through its last image by the vision path, then the batch."""
        if self.vision is None:
            raise InvalidRequestError(f"{self.model_id} does not accept images", param="messages")
        spans = self.vision.spans(prompt, req.images)
        keys = image_keys(prompt, spans)
        cache, rest = self._prefix.fetch(keys) if self._prefix is not None else (None, keys)
        cached = len(prompt) - len(rest)
        cut = cut_to_image_start(cached, spans)
        if cache is None:
            cache = make_prompt_cache(self.model)
        elif cut < cached:
            trim_prompt_cache(cache, cached - cut)
        seq = VisionSequence(
            self._next_uid, self.vision, prompt, spans, cache, cut, self.config.prefill_step_size, req.max_tokens
        )
        stop = self._no_stop if keep else self._eos
        active = _Active(req, emit, seq, seq.uid, cut, sampler, processors, stop, added=time.perf_counter(), keys=keys)
        self._end_solo()
        self._reading.append(seq)
        self._by_uid[active.uid] = active
        self._by_request[req.request_id] = active.uid
        self._refresh_stats()
        trace_added(req, cut, "vision", len(self._waiting), self._in_batch)

    def cancel(self, request_id: str, reason: str = "cancelled") -> None:
        """Drop a request wherever it is (solo, prefilling, in the batch); its slot is free at the next step."""
        uid = self._by_request.pop(request_id, None)
        if uid is None:
            return
        active = self._by_uid.pop(uid)
        self._forget(active)
        self._refresh_stats()
        if reason == "timeout":
            error = RequestTimeoutError("the request ran past the server's timeout")
            active.emit(TokenEvent(tokens=[], finish_reason="error", error=error))
        else:
            active.emit(TokenEvent(tokens=[], finish_reason="cancelled"))

    def cancel_all(self, error: BaseException) -> None:
        """End every request with `error` (a failed step, an unload)."""
        for active in list(self._by_uid.values()):
            self._forget(active)
            active.emit(TokenEvent(tokens=[], finish_reason="error", error=error))
        self._by_uid.clear()
        self._by_request.clear()
        self._refresh_stats()

    def step(self) -> None:
        """One solo step, or one batch step: a decode step and one chunk of the waiting prompts' prefill."""
        self._drop_expired()
        if not self._by_uid or self._burst_hold() > 0:
            return
        self.stats.maybe_log()
        if self._reading:
            self._step_reading(self._reading[0])
        if self._solo is not None:
            self._step_solo(self._solo)
            return
        self._admit_waiting()
        if self._in_batch == 0:
            return
        t0 = time.perf_counter()
        with self._gen.stats() as work:
            prompts, responses = self._gen.next()
        t1 = time.perf_counter()
        self._steps += 1
        wanted = [
            (r, self._by_uid[r.uid].req.logprobs or 0)
            for r in responses
            if r.uid in self._by_uid and self._by_uid[r.uid].req.logprobs is not None
        ]
        logprobs = {r.uid: lp for (r, _), lp in zip(wanted, token_logprobs(wanted), strict=True)}
        for r in responses:
            active = self._by_uid.get(r.uid)
            if active is not None:
                self._deliver(active, r, logprobs.get(r.uid))
        if self._steps % 8 == 0 or self._stats_stale:
            self._refresh_stats()
        finished_prompts = sum(1 for p in prompts if p.end_of_prompt)  # reported a step after their last chunk
        for p in prompts:
            if p.end_of_prompt:
                self._prefilling.discard(p.uid)
        # A prompt whose last chunk ran this step has only its last token left: the next step moves it into
        # decoding (a forward pass of its own and a merge of caches) and frees its prefill slot only then.
        self._splitting = any(not p.end_of_prompt and p.progress[0] == p.progress[1] - 1 for p in prompts)
        if work.prompt_tokens or finished_prompts:
            self.stats.prefilled(finished_prompts, work.prompt_tokens, work.prompt_time)
        if responses:
            self.stats.decoded(len(responses), work.decode_time, time.perf_counter() - t1)
        trace_step(self._steps, t1 - t0, work, len(responses), finished_prompts, t1, len(self._waiting))

    def close(self) -> None:
        self._gen.close()
        self._prefix = None
        if self.vision is not None:
            self.vision.close()

    def forget_history(self) -> None:
        """Empty the prefix cache and the step statistics (after the warm-up: nothing of it is worth keeping)."""
        self._prefix = self._new_prefix_cache()
        self.stats = StepStats(self.model_id)
        self._refresh_stats()

    # -- scheduling ----------------------------------------------------------------------------------------
    def _step_solo(self, solo: SoloSequence) -> None:
        t0 = time.perf_counter()
        pending = solo.pending_prompt
        with mx.stream(self._stream):
            r = solo.step()
        t1 = time.perf_counter()
        if r is None:
            if pending > solo.pending_prompt:
                self.stats.prefilled(int(solo.prefilled), pending - solo.pending_prompt, t1 - t0)
            return
        if r.finish_reason is not None:
            self._solo = None
        active = self._by_uid[r.uid]
        lp = token_logprobs([(r, active.req.logprobs or 0)])[0] if active.req.logprobs is not None else None
        self._deliver(active, r, lp)
        if self._stats_stale:
            self._refresh_stats()
        self.stats.decoded(1, t1 - t0, time.perf_counter() - t1)

    def _step_reading(self, seq: VisionSequence) -> None:
        """One unit of the oldest image prompt's prefill; once its images are in, it joins the batch."""
        active = self._by_uid[seq.uid]
        active.scheduled = active.scheduled or time.perf_counter()
        t0 = time.perf_counter()
        try:
            with mx.stream(self._stream):
                seq.step()
        except Exception as e:  # a bad image fails its own request, never the batch
            logger.warning("%s: the image prompt failed: %s", active.req.request_id, e)
            self._reading.popleft()
            self._by_uid.pop(seq.uid, None)
            self._by_request.pop(active.req.request_id, None)
            self._refresh_stats()
            error = e if isinstance(e, InvalidRequestError) else RuntimeError(f"the image prompt failed: {e}")
            active.emit(TokenEvent([], finish_reason="error", error=error))
            return
        self.stats.prefilled(0, 0, time.perf_counter() - t0)
        if not seq.prefilled:
            self._refresh_stats()  # its cache grows by a chunk a step: admission and health read kv_bytes
            return
        self._reading.popleft()
        self._end_solo()
        active = self._by_uid.pop(seq.uid)
        try:
            with mx.stream(self._stream):
                self._to_batch(active, seq.handover())
        except Exception as e:  # this request ends with the error; the batch and its other rows go on
            logger.warning("%s: the image prompt could not join the batch: %s", active.req.request_id, e)
            self._by_request.pop(active.req.request_id, None)
            active.emit(TokenEvent([], finish_reason="error", error=RuntimeError(f"the image prompt failed: {e}")))
        self._stats_stale = True

    def _end_solo(self) -> None:
        """Another request arrived: the solo request continues in the batch, exactly where it was."""
        solo, self._solo = self._solo, None
        if solo is None:
            return
        if not solo.decoding:
            self._waiting.appendleft(solo)  # still in prefill: the batch prefills the rest, first in line
            return
        with mx.stream(self._stream):
            self._to_batch(self._by_uid.pop(solo.uid), solo.handover())

    def _admit_waiting(self) -> None:
        """Hand waiting requests to the batch generator (oldest first) while the batch has room, one prefill
        group at a time.

        mlx-lm's generator fills its prefill group before it moves the prompts prefilled in the last step
        into decoding, so newcomers handed over in that step find half a group: under a trickle of arrivals
        every step then prefilled half a group and moved the other half on, a forward pass and a merge of
        caches each (on the H200 with the 0.5B: 32 streams in 8 groups of 4, steps of 92-144 ms). Holding
        newcomers for that one step keeps the groups whole, as when all prompts arrive at once."""
        if self._gathering() or (self._splitting and self._prefilling):
            return
        room = self._prefill_group - len(self._prefilling)
        while self._waiting and room > 0 and self._in_batch < self.config.max_running:
            seq = self._waiting.popleft()
            self._to_batch(self._by_uid.pop(seq.uid), seq.handover())
            room -= 1

    def _newcomers(self, seqs: Iterable[SoloSequence]) -> list[Newcomer]:
        return [Newcomer(s.pending_prompt, self._by_uid[s.uid].added, s.fresh) for s in seqs]

    def _burst_hold(self) -> float:
        """Seconds an idle model's newcomers still wait for the rest of their burst (`holds.burst_hold`)."""
        if self._in_batch or self.config.idle_gather_ms <= 0 or (self._solo is not None and not self._solo.fresh):
            return 0.0  # the common cases, once per token: a batch or a solo request running
        held = [self._solo] if self._solo is not None else self._waiting
        c = self.config
        return burst_hold(
            c.idle_gather_ms,
            self._newcomers(held),
            self._prefill_group,
            c.prefill_batch_tokens,
            time.perf_counter(),
            c.idle_gather_min_tokens,
        )

    def _gathering(self) -> bool:
        """Whether newcomers to a decoding batch wait one more step (`holds.gathering`; never on an idle model)."""
        if self.config.prefill_gather_ms <= 0 or self._in_batch == 0:
            return False
        waiting = self._newcomers(self._waiting)
        return gathering(self.config.prefill_gather_ms, waiting, self.config.prefill_batch_tokens, time.perf_counter())

    def _to_batch(self, active: _Active, hand: BatchHandover) -> None:
        (uid,) = self._gen.insert(
            [hand.prompt],
            [hand.max_tokens],
            caches=[hand.cache],
            all_tokens=[hand.all_tokens],
            samplers=[active.sampler],
            logits_processors=[active.processors],
            stop_sequences=[active.stop],
        )
        active.uid = uid
        active.scheduled = active.scheduled or time.perf_counter()
        self._by_uid[uid] = active
        self._by_request[active.req.request_id] = uid
        self._in_batch += 1
        self._prefilling.add(uid)

    def _forget(self, active: _Active) -> None:
        """Remove a request from wherever it is scheduled (the caller drops it from the maps)."""
        if active.uid >= 0:
            self._gen.remove([active.uid])
            self._in_batch -= 1
            self._prefilling.discard(active.uid)
        elif self._solo is active.seq:
            self._solo = None
        elif isinstance(active.seq, VisionSequence):
            if active.seq in self._reading:
                self._reading.remove(active.seq)
        elif active.seq in self._waiting:
            self._waiting.remove(active.seq)

    def _deliver(self, active: _Active, r: Any, logprob: TokenLogprob | None) -> None:
        finish = r.finish_reason
        tokens = [] if finish == "stop" else [r.token]  # the EOS that ends a request is not in the answer
        event = TokenEvent(
            tokens=tokens,
            logprobs=[logprob] if (logprob is not None and tokens) else None,
            finish_reason=finish,
        )
        active.generated += len(tokens)
        if not active.started:
            active.started = True
            active.first_token_ms = 1000 * (time.perf_counter() - active.added)
            event.prompt_tokens = len(active.req.prompt_tokens)
            event.cached_tokens = active.cached_tokens
            event.queue_seconds = max(0.0, active.scheduled - active.added)
        if finish is not None:
            if not active.req.internal:
                _log_finished(active, finish)
            self._by_uid.pop(active.uid, None)
            self._by_request.pop(active.req.request_id, None)
            if active.uid >= 0:
                self._in_batch -= 1
            if self._prefix is not None:
                tokens = r.all_tokens
                if active.keys is not None and tokens is not None:  # image tokens keyed by their images
                    tokens = active.keys + list(tokens[len(active.keys) :])
                self._prefix.store(tokens, r.prompt_cache)
        if finish is not None or event.prompt_tokens:
            self._stats_stale = True  # refreshed once after the step, not once per request (64 firsts at once)
        active.emit(event)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for active in list(self._by_uid.values()):
            deadline = active.req.deadline
            if deadline is not None and now > deadline:
                logger.info("request %s ran past its deadline", active.req.request_id)
                self.cancel(active.req.request_id, reason="timeout")


def _log_finished(active: _Active, finish: str) -> None:
    """The engine's view of a finished request (debug: the server's end line for it is the one at info)."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    seconds = time.perf_counter() - active.added
    decode = seconds - active.first_token_ms / 1000
    logger.debug(
        "%s: %d prompt tokens (%d cached), first token after %.0f ms, %d tokens in %.2f s (%.1f tok/s), %s",
        active.req.request_id,
        len(active.req.prompt_tokens),
        active.cached_tokens,
        active.first_token_ms,
        active.generated,
        seconds,
        (active.generated - 1) / decode if decode > 0 and active.generated > 1 else 0.0,
        finish,
    )


def _vocab_size(model: Any, tokenizer: Any) -> int:
    args = getattr(model, "args", None)
    size = getattr(args, "vocab_size", None)
    return int(size) if isinstance(size, int) else len(tokenizer)
