"""`/v1/completions` (legacy prompt completion) wire types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from mlx_router.protocol.common import FinishReason, FiniteLogprob, SamplingFields, Usage


class LegacyLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[FiniteLogprob] = Field(default_factory=list)
    top_logprobs: list[dict[str, FiniteLogprob]] | None = None
    text_offset: list[int] = Field(default_factory=list)


class CompletionRequest(SamplingFields):
    """The body of `POST /v1/completions`."""

    prompt: str | list[int] | list[str] = Field(...)
    echo: bool | None = None
    logprobs: int | None = Field(None, ge=0, le=20)
    suffix: str | None = None

    def prompt_input(self) -> str | list[int]:
        """A single prompt: text or token ids. A list of several prompts is refused (one choice per request)."""
        p = self.prompt
        if isinstance(p, list) and p and all(isinstance(x, str) for x in p):
            if len(p) != 1:
                raise ValueError("one prompt per request is supported")
            return str(p[0])
        return p  # type: ignore[return-value]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None
    logprobs: LegacyLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
