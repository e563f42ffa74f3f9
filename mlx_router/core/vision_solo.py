"""Vision models whose prompts cannot be handed to mlx-lm's batch: mlx-vlm's own generation, one request at a
time, in arrival order.

mlx-vlm knows some 200 model families; mlx-lm has a text class (and so the shared batch) for few of them. For
the others this runner feeds mlx-vlm's processor the rendered prompt and the images, and steps mlx-vlm's
`generate_step` one token per worker iteration with the request's own sampler and logits processors (seed,
penalties, grammar), so streaming, stops, tool calls and structured output work as on the batch path. What it
does not have: batching, the prefix cache, and chunked prefill between other requests' steps (a prompt is
prefilled in one go; other models on the engine wait for it).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx

from mlx_router.core.logprobs import token_logprobs
from mlx_router.core.runner import RunnerConfig
from mlx_router.core.sampling import SamplerFactory, logits_processors
from mlx_router.core.step_stats import StepStats
from mlx_router.engine.params import GenerationRequest, TokenEvent
from mlx_router.errors import InvalidRequestError, RequestTimeoutError

logger = logging.getLogger(__name__)

Emit = Callable[[TokenEvent], None]


@dataclass
class _Job:
    req: GenerationRequest
    emit: Emit
    steps: Iterator[tuple[Any, Any]] | None = None
    prompt_tokens: int = 0
    generated: int = 0
    added: float = field(default_factory=time.perf_counter)


@dataclass
class _Row:
    """Shaped as `token_logprobs` reads a response."""

    token: int
    logprobs: Any


class SoloVisionRunner:
    """One model served by mlx-vlm's generation loop (worker thread only)."""

    def __init__(
        self,
        model_id: str,
        vlm: Any,
        processor: Any,
        tokenizer: Any,
        config: RunnerConfig,
        grammar_processor: Callable[[str], Any] | None = None,
        context_tokens: int | None = None,
    ) -> None:
        self.model_id = model_id
        self._context = context_tokens  # only mlx-vlm's processor knows a prompt's image tokens: checked here
        self.model = vlm
        self.tokenizer = tokenizer
        self.config = config
        self._processor = processor
        self._grammar_processor = grammar_processor
        self._samplers = SamplerFactory(vocab_size=len(tokenizer))
        self._eos = frozenset(int(t) for t in tokenizer.eos_token_ids)
        self._image_token = _image_token_id(vlm)
        self._queue: deque[_Job] = deque()
        self._current: _Job | None = None
        self.stats = StepStats(model_id)
        logger.info("%s: mlx-vlm serves it one request at a time (no batching, no prefix cache)", model_id)

    # -- queries -------------------------------------------------------------------------------------------
    def has_work(self) -> bool:
        return self._current is not None or bool(self._queue)

    def ready_in(self) -> float:
        return 0.0

    def counts(self) -> tuple[int, int]:
        running = 1 if self._current is not None and self._current.generated else 0
        return running, len(self._queue) + (1 if self._current is not None and not running else 0)

    def kv_bytes(self) -> int:
        return 0  # mlx-vlm's caches live inside its generator; admission counts each request's reservation

    def prefix_bytes(self) -> int:
        return 0

    # -- commands ------------------------------------------------------------------------------------------
    def add(self, req: GenerationRequest, emit: Emit) -> None:
        if req.images and req.prompt_text is None:
            raise InvalidRequestError("an image request for this model needs its rendered prompt")
        if req.grammar is not None and self._grammar_processor is None:
            raise ValueError("constrained decoding is not available for this model")
        self._queue.append(_Job(req, emit))

    def cancel(self, request_id: str, reason: str = "cancelled") -> None:
        job = self._find(request_id)
        if job is None:
            return
        self._drop(job)
        if reason == "timeout":
            error = RequestTimeoutError("the request ran past the server's timeout")
            job.emit(TokenEvent([], finish_reason="error", error=error))
        else:
            job.emit(TokenEvent([], finish_reason="cancelled"))

    def cancel_all(self, error: BaseException) -> None:
        jobs = ([self._current] if self._current is not None else []) + list(self._queue)
        self._current = None
        self._queue.clear()
        for job in jobs:
            job.emit(TokenEvent([], finish_reason="error", error=error))

    def close(self) -> None:
        self._current = None
        self._queue.clear()

    def forget_history(self) -> None:
        self.stats = StepStats(self.model_id)

    # -- stepping ------------------------------------------------------------------------------------------
    def step(self) -> None:
        """The next token of the current request (its first step prefills the whole prompt)."""
        self._drop_expired()
        if self._current is None:
            if not self._queue:
                return
            self._current = self._queue.popleft()
        job = self._current
        t0 = time.perf_counter()
        starting = job.generated == 0  # processing the images and prefilling: what fails there is the input's
        try:
            if job.steps is None:
                job.steps = self._start(job)
            token_arr, logprobs = next(job.steps)
        except StopIteration:
            self._finish(job, TokenEvent([], finish_reason="length"))
            return
        except Exception as e:  # fails its own request only
            logger.warning("%s: %s failed: %s", self.model_id, job.req.request_id, e)
            error: BaseException = e
            if starting and not isinstance(e, InvalidRequestError):
                error = InvalidRequestError(f"the prompt could not be read: {e}", param="messages")
            self._finish(job, TokenEvent([], finish_reason="error", error=error))
            return
        self.stats.decoded(1, time.perf_counter() - t0, 0.0)
        self._deliver(job, int(token_arr.item() if hasattr(token_arr, "item") else token_arr), logprobs)

    def _start(self, job: _Job) -> Iterator[tuple[Any, Any]]:
        from mlx_vlm.generate import generate_step
        from mlx_vlm.utils import prepare_inputs

        req = job.req
        extra: dict[str, Any] = {}
        language = getattr(self.model, "language_model", None)
        for stale in ("_position_ids", "_rope_deltas"):  # Qwen-VL keeps the last image prompt's positions
            if getattr(language, stale, None) is not None:
                setattr(language, stale, None)
        if req.images:
            from PIL import Image

            pictures = [Image.frombytes("RGB", (i.width, i.height), i.rgb) for i in req.images]
            inputs = prepare_inputs(self._processor, images=pictures, prompts=[req.prompt_text])
            ids = inputs["input_ids"]
            pixels, mask = inputs.get("pixel_values"), inputs.get("attention_mask")
            extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "pixel_values", "attention_mask")}
            if self._image_token is not None and not bool((ids == self._image_token).any().item()):
                raise InvalidRequestError("the prompt has no place for its images (the chat template dropped them)")
        else:
            ids, pixels, mask = mx.array([list(req.prompt_tokens)]), None, None
        job.prompt_tokens = int(ids.shape[1])
        if self._context is not None and job.prompt_tokens + req.max_tokens > self._context:
            raise InvalidRequestError(
                f"this model's context is {self._context} tokens; the prompt (its images counted) has "
                f"{job.prompt_tokens} and {req.max_tokens} are asked for",
                param="messages",
                code="context_length_exceeded",
            )
        processors = logits_processors(req.sampling, job.prompt_tokens)
        if req.grammar is not None and self._grammar_processor is not None:
            processors.append(self._grammar_processor(req.grammar))
        return generate_step(
            ids,
            self.model,
            pixels,
            mask,
            max_tokens=req.max_tokens,
            sampler=self._samplers.sampler(req.sampling),
            logits_processors=processors or None,
            prefill_step_size=self.config.prefill_step_size,
            **extra,
        )

    def _deliver(self, job: _Job, token: int, logprobs: Any) -> None:
        stop = token in self._eos and not (job.req.ignore_eos and job.req.grammar is None)
        tokens = [] if stop else [token]
        event = TokenEvent(tokens)
        if job.req.logprobs is not None and tokens and logprobs is not None:
            event.logprobs = token_logprobs([(_Row(token, logprobs.reshape(-1)), job.req.logprobs)])
        if not job.generated:
            event.prompt_tokens = job.prompt_tokens
        job.generated += 1
        if stop:
            event.finish_reason = "stop"
        elif job.generated >= job.req.max_tokens:
            event.finish_reason = "length"
        if event.finish_reason is not None:
            self._finish(job, event)
        else:
            job.emit(event)

    def _finish(self, job: _Job, event: TokenEvent) -> None:
        self._drop(job)
        if not job.generated and job.prompt_tokens and not event.prompt_tokens:
            event.prompt_tokens = job.prompt_tokens
        job.emit(event)
        mx.clear_cache()

    def _find(self, request_id: str) -> _Job | None:
        if self._current is not None and self._current.req.request_id == request_id:
            return self._current
        return next((j for j in self._queue if j.req.request_id == request_id), None)

    def _drop(self, job: _Job) -> None:
        if job is self._current:
            self._current = None
        elif job in self._queue:
            self._queue.remove(job)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for job in ([self._current] if self._current is not None else []) + list(self._queue):
            if job.req.deadline is not None and now > job.req.deadline:
                self.cancel(job.req.request_id, reason="timeout")


def _image_token_id(vlm: Any) -> int | None:
    config = getattr(vlm, "config", None)
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None
