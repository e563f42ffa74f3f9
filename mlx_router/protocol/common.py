"""Wire types shared by several endpoints, with OpenAI's field names."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator
from pydantic_core import PydanticCustomError

MAX_STOP_SEQUENCES = 16
MAX_SEED = 2**64 - 1  # seeds are PRNG keys of 64 bits
_SURROGATE = re.compile("[\ud800-\udfff]")


class OpenAIModel(BaseModel):
    """Base for request bodies: unknown fields are ignored, as OpenAI-compatible clients send extras."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _finite_logprob(value: float) -> float:
    # A token the sampler ruled out has log-probability -inf (and extreme penalties can give NaN); JSON has no
    # such numbers, so they are written as OpenAI writes an impossible token's: -9999.0.
    return value if math.isfinite(value) else -9999.0


FiniteLogprob = Annotated[float, PlainSerializer(_finite_logprob, return_type=float)]
"""A log-probability as written in responses: always a finite JSON number."""


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope."""

    error: ErrorBody


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class TopLogprob(BaseModel):
    token: str
    logprob: FiniteLogprob
    bytes: list[int] | None = None


class TokenLogprobOut(BaseModel):
    token: str
    logprob: FiniteLogprob
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None = None


class RequestBody(OpenAIModel):
    """Base for a whole request's body: text that has no UTF-8 form is refused before anything reads it."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        # JSON may escape half of a UTF-16 pair ("\ud800"); such text has no UTF-8 form, so tokenizers and
        # encoders would fail on it deep inside the server. Refused here, naming the field.
        where = lone_surrogate_path(data)
        if where is not None:
            raise PydanticCustomError(
                "lone_surrogate",
                "the text holds a lone UTF-16 surrogate (an unpaired \\uD800-\\uDFFF escape), "
                "which is not valid Unicode",
                {"param": where},
            )
        return data


class SamplingFields(RequestBody):
    """Sampling fields common to chat and legacy completions."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says (benchmarks)

    @field_validator("stop")
    @classmethod
    def _stop_size(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are supported")
        return v

    @field_validator("n")
    @classmethod
    def _single_choice(cls, v: int | None) -> int | None:
        if v is not None and v != 1:
            raise ValueError("only n=1 is supported: send several requests for several choices")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        return [s for s in stops if s]


def lone_surrogate_path(value: Any) -> str | None:
    """The dotted path of the first string (or object key) in `value` that holds a lone surrogate, or None.
    Walked with a stack of its own: JSON may nest deeper than Python's recursion allows."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item) is not None:
                return path or "(body)"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key) is not None:
                    return where.encode("utf-8", "backslashreplace").decode()  # the path must be valid text
                stack.append((where, child))
        elif isinstance(item, list):
            stack.extend((f"{path}.{i}" if path else str(i), child) for i, child in reversed(list(enumerate(item))))
    return None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
JSONObject = dict[str, Any]
