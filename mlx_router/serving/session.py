"""One generation from admission to the last text chunk, shared by chat and legacy completions.

Opening a session admits the request (429/503 come from here, before any byte is streamed). `chunks()` waits
for the model to load, runs the generation and yields text deltas (grouped by `stream_chunk_size` tokens) with
stop strings applied; the last chunk carries the finish reason and the token counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from mlx_router.engine.interface import Admission, Engine, Generation
from mlx_router.engine.params import GenerationRequest, TokenLogprob
from mlx_router.errors import RequestTimeoutError, RouterError
from mlx_router.serving.text import TextAssembler

logger = logging.getLogger(__name__)


@dataclass
class TextChunk:
    text: str
    tokens: int
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class UsageCounts:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


class EngineFailure(RouterError):
    """The engine failed this request mid-way (500, no internals)."""


class GenerationSession:
    """Runs one GenerationRequest; an async context manager that holds the model while it runs."""

    def __init__(
        self,
        engine: Engine,
        request: GenerationRequest,
        tokenizer: object,
        stops: list[str],
        timeout: float,
        chunk_tokens: int = 1,
    ) -> None:
        self._engine = engine
        self.request = request
        self._assembler = TextAssembler(tokenizer, stops)
        self._timeout = timeout
        self._chunk_tokens = max(1, chunk_tokens)
        self._started = time.monotonic()
        self._admission: Admission | None = None
        self.usage = UsageCounts(prompt_tokens=len(request.prompt_tokens))
        self.token_ids: list[int] = []  # every generated token, in order (the EOS that ended it not included)
        self.first_token_at: float | None = None
        self._generation: Generation | None = None
        self.outcome: str | None = None  # how it ended (`outcome_of`); None while it runs
        self.last_token_at: float | None = None
        self.engine_queue_seconds: float | None = None  # its wait in the engine, from its first event
        self.on_tokens: Callable[[int, float], None] | None = None  # tokens after the first: (count, seconds)
        request.deadline = self._started + timeout

    async def __aenter__(self) -> GenerationSession:
        admission = self._engine.generate(self.request)
        try:
            # What refuses the request (limits, a model's files that cannot load, no room with every idle model
            # evicted) is known before the response starts, so a stream gets its HTTP status, not 200 and an error
            async with asyncio.timeout_at(self._loop_deadline()):
                self._generation = await admission.__aenter__()
        except TimeoutError:
            self.outcome = "timeout"
            raise RequestTimeoutError(
                f"loading {self.request.model_id} did not start within the server's timeout of {self._timeout:g}s"
            ) from None
        except BaseException as e:
            self.outcome = outcome_of(e, admitted=False)
            raise
        self._admission = admission
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._admission is not None:
            await self._admission.__aexit__(*exc)
            self._admission = None

    async def chunks(self) -> AsyncIterator[TextChunk]:
        """Text deltas until the end of the generation; raises RequestTimeoutError past the deadline."""
        try:
            async with asyncio.timeout_at(self._loop_deadline()):
                async for chunk in self._run():
                    yield chunk
        except TimeoutError:
            self.outcome = "timeout"
            raise RequestTimeoutError(
                f"the request did not finish within the server's timeout of {self._timeout:g}s"
            ) from None
        except BaseException as e:  # a failure, or the client gone (the generator closed, the task cancelled)
            self.outcome = self.outcome or outcome_of(e, admitted=True)
            raise
        finally:
            self._log_timeline()

    def _loop_deadline(self) -> float:
        remaining = self._started + self._timeout - time.monotonic()
        return asyncio.get_running_loop().time() + max(0.0, remaining)

    async def _run(self) -> AsyncIterator[TextChunk]:
        generation = self._generation
        assert generation is not None, "chunks() is read inside `async with session`"
        try:
            async for chunk in self._chunks(generation):
                yield chunk
        finally:
            generation.close()  # before the last chunk went out (a stop string, a client gone): cancels it

    async def _chunks(self, generation: Generation) -> AsyncIterator[TextChunk]:
        pending = TextChunk(text="", tokens=0)
        async for event in generation.events():
            if event.error is not None:
                raise _as_router_error(event.error)
            if event.prompt_tokens:  # the engine's count (a model mlx-vlm serves alone expands images there)
                self.usage.prompt_tokens, self.usage.cached_tokens = event.prompt_tokens, event.cached_tokens
                self.engine_queue_seconds = event.queue_seconds
            if event.tokens:
                self._timed(len(event.tokens))
            self.usage.completion_tokens += len(event.tokens)
            self.token_ids.extend(event.tokens)
            pending.text += self._assembler.add(event.tokens)
            pending.tokens += len(event.tokens)
            if event.logprobs:
                pending.logprobs.extend(event.logprobs)
            if self._assembler.stopped:
                pending.finish_reason = self.outcome = "stop"
                yield pending
                return  # `_run` closes the generation, which cancels it in the engine
            if event.finish_reason is not None:
                pending.text += self._assembler.finish()
                pending.finish_reason = self.outcome = "length" if event.finish_reason == "length" else "stop"
                yield pending
                return
            if pending.tokens >= self._chunk_tokens and pending.text:
                yield pending
                pending = TextChunk(text="", tokens=0)

    def _timed(self, n: int) -> None:
        now = time.monotonic()
        if self.first_token_at is None:
            self.first_token_at = now
        elif self.on_tokens is not None and self.last_token_at is not None:
            self.on_tokens(n, now - self.last_token_at)
        self.last_token_at = now

    @property
    def queue_seconds(self) -> float | None:
        """How long it waited before its prefill began: for its model (and the engine), then in the engine."""
        posted = self._posted_at
        if posted is None or self.engine_queue_seconds is None:
            return None
        return posted - self._started + self.engine_queue_seconds

    @property
    def _posted_at(self) -> float | None:
        """When the request went to the engine, its model loaded."""
        return None if self._generation is None else self._generation.posted_at

    @property
    def text(self) -> str:
        return self._assembler.text

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the output, if one did."""
        return self._assembler.stop_sequence

    @property
    def whole(self) -> bool:
        """Whether `text` is all of `token_ids`, decoded: the output ended at EOS or max_tokens, not at a stop
        string (whose tokens past the cut were generated but are not in the text)."""
        return not self._assembler.stopped

    def _log_timeline(self) -> None:
        """Where a request's time to first token went on this side: preparing it (template, tokens),
        waiting for its model, and the engine (its own log line splits that part further)."""
        received, posted, first = self.request.received, self._posted_at, self.first_token_at
        if not received or posted is None or first is None or not logger.isEnabledFor(logging.DEBUG):
            return
        logger.debug(
            "%s: prepared in %.0f ms, model ready %.0f ms later, first token %.0f ms after that (%.0f ms in all)",
            self.request.request_id,
            1000 * (self._started - received),
            1000 * (posted - self._started),
            1000 * (first - posted),
            1000 * (first - received),
        )


def outcome_of(error: BaseException, admitted: bool) -> str:
    """How a request that raised `error` ended: cancelled (its client left), or by the error's status."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return status_outcome(error.status if isinstance(error, RouterError) else 500, admitted)


def status_outcome(status: int, admitted: bool) -> str:
    """timeout (504), cancelled (499), refused (429/503 before admission), invalid (other 4xx), else error."""
    if status == 504:
        return "timeout"
    if status == 499:
        return "cancelled"
    if status in (429, 503) and not admitted:
        return "refused"
    if 400 <= status < 500 and status != 429:
        return "invalid"
    return "error"


def _as_router_error(error: BaseException) -> RouterError:
    if isinstance(error, RouterError):
        return error
    return EngineFailure("the model failed while generating this response")
