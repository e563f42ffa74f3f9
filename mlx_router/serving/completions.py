"""Legacy `/v1/completions`: a raw prompt (text or token ids) continued by the model, no chat template."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from mlx_router.config.settings import Settings
from mlx_router.engine.interface import Engine
from mlx_router.engine.params import GenerationRequest, TokenLogprob
from mlx_router.engine.resource_monitor import ResourceMonitor
from mlx_router.errors import InvalidRequestError
from mlx_router.observability.ids import RequestId
from mlx_router.protocol.completions import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    LegacyLogprobs,
)
from mlx_router.serving.chat import usage_of
from mlx_router.serving.offload import INLINE_ENCODE_CHARS, run_sized
from mlx_router.serving.params import output_limit, sampling_params
from mlx_router.serving.profiles import ModelProfile, ProfileStore
from mlx_router.serving.session import GenerationSession


@dataclass
class PreparedCompletion:
    id: str
    created: int
    request: CompletionRequest
    profile: ModelProfile
    generation: GenerationRequest
    prompt_text: str


class CompletionService:
    """Validates and runs legacy completions."""

    def __init__(self, settings: Settings, engine: Engine, profiles: ProfileStore, monitor: ResourceMonitor):
        self._settings = settings
        self._engine = engine
        self._profiles = profiles
        self._monitor = monitor

    async def prepare(self, req: CompletionRequest, rid: RequestId | None = None) -> PreparedCompletion:
        """`rid`: the request's id (`X-Request-ID`); the response's id is `cmpl-<id>`."""
        received = time.monotonic()
        rid = rid or RequestId.new()
        if req.suffix:
            raise InvalidRequestError("suffix (fill-in-the-middle) is not supported", param="suffix")
        profile = await self._profiles.get(req.model)
        try:
            prompt = req.prompt_input()
        except ValueError as e:
            raise InvalidRequestError(str(e), param="prompt") from None
        if isinstance(prompt, str):
            profile.prompts.refuse_oversized(prompt, profile.context_tokens, "prompt")  # before costly encoding
            tokens = await run_sized(len(prompt), INLINE_ENCODE_CHARS, profile.tokenizer.encode, prompt)
            text = prompt
        else:
            context = profile.context_tokens
            if context is not None and len(prompt) >= context:  # refused before the ids are checked and decoded
                raise InvalidRequestError(
                    f"the prompt has {len(prompt)} tokens and this model's context is {context}",
                    param="prompt",
                    code="context_length_exceeded",
                )
            if not prompt or any(not 0 <= t < profile.vocab_size for t in prompt):
                raise InvalidRequestError("prompt token ids must be non-empty and in the vocabulary", param="prompt")
            tokens, text = list(prompt), profile.tokenizer.decode(prompt)
        if not tokens:
            raise InvalidRequestError("the prompt is empty", param="prompt")
        limit = output_limit(
            req.max_tokens or 16,
            profile.settings,
            self._settings.defaults,
            self._monitor.snapshot().pressure,
            len(tokens),
            profile.context_tokens,
        )
        gen = GenerationRequest(
            request_id=rid.engine_id("cmpl"),
            model_id=req.model,
            prompt_tokens=tokens,
            max_tokens=limit,
            sampling=sampling_params(req, profile.settings, profile.vocab_size),
            logprobs=req.logprobs,
            ignore_eos=req.ignore_eos,
            received=received,
        )
        return PreparedCompletion(rid.response_id("cmpl"), int(time.time()), req, profile, gen, text)

    def session(self, p: PreparedCompletion) -> GenerationSession:
        d = self._settings.defaults
        return GenerationSession(
            self._engine,
            p.generation,
            p.profile.tokenizer,
            p.request.stop_list(),
            d.timeout,
            d.stream_chunk_size,
        )

    async def complete(self, p: PreparedCompletion, session: GenerationSession) -> CompletionResponse:
        finish, logprobs = "stop", []
        async for chunk in session.chunks():
            logprobs.extend(chunk.logprobs)
            finish = chunk.finish_reason or finish
        text = (p.prompt_text if p.request.echo else "") + session.text
        choice = CompletionChoice(
            text=text,
            finish_reason=finish,
            logprobs=_legacy_logprobs(p.profile.tokenizer, logprobs) if p.request.logprobs is not None else None,
        )
        return CompletionResponse(
            id=p.id, created=p.created, model=p.request.model, choices=[choice], usage=usage_of(session.usage)
        )

    async def stream(self, p: PreparedCompletion, session: GenerationSession) -> AsyncIterator[CompletionResponse]:
        if p.request.echo:
            yield self._chunk(p, p.prompt_text, None, None)
        async for chunk in session.chunks():
            lp = _legacy_logprobs(p.profile.tokenizer, chunk.logprobs) if chunk.logprobs else None
            if chunk.text or chunk.finish_reason or lp:
                yield self._chunk(p, chunk.text, chunk.finish_reason, lp)
        opts = p.request.stream_options
        if opts is not None and opts.include_usage:
            yield CompletionResponse(
                id=p.id, created=p.created, model=p.request.model, choices=[], usage=usage_of(session.usage)
            )

    @staticmethod
    def _chunk(p: PreparedCompletion, text: str, finish: str | None, lp: LegacyLogprobs | None) -> CompletionResponse:
        choice = CompletionChoice(text=text, finish_reason=finish, logprobs=lp)
        return CompletionResponse(id=p.id, created=p.created, model=p.request.model, choices=[choice])


def _legacy_logprobs(tokenizer: Any, items: list[TokenLogprob]) -> LegacyLogprobs:
    out = LegacyLogprobs(top_logprobs=[])
    offset = 0
    for it in items:
        text = tokenizer.decode([it.token])
        out.tokens.append(text)
        out.token_logprobs.append(it.logprob)
        out.text_offset.append(offset)
        offset += len(text)
        assert out.top_logprobs is not None
        out.top_logprobs.append({tokenizer.decode([t]): lp for t, lp in it.top})
    return out
