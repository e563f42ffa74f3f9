"""From a request, the model's config entry and the server defaults to the engine's generation parameters."""

from __future__ import annotations

from mlx_router.config.settings import DefaultsConfig, ModelSettings, PressureLevel
from mlx_router.conversation.model import SamplingOptions
from mlx_router.engine.params import SamplingParams
from mlx_router.errors import InvalidRequestError
from mlx_router.protocol.common import SamplingFields

# OpenAI's defaults where neither the request nor the model's config entry says.
DEFAULT_TEMPERATURE = 1.0


def sampling_params(req: SamplingOptions | SamplingFields, ms: ModelSettings, vocab_size: int) -> SamplingParams:
    """Request values first, then the model's config entry, then OpenAI's defaults."""

    def pick(value: float | int | None, model_value: float | int | None, default: float | int) -> float | int:
        if value is not None:
            return value
        return model_value if model_value is not None else default

    return SamplingParams(
        temperature=float(pick(req.temperature, ms.temp, DEFAULT_TEMPERATURE)),
        top_p=float(pick(req.top_p, ms.top_p, 1.0)),
        top_k=int(pick(req.top_k, ms.top_k, 0)),
        min_p=float(pick(req.min_p, ms.min_p, 0.0)),
        repetition_penalty=req.repetition_penalty or ms.repetition_penalty,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        logit_bias=_logit_bias(req.logit_bias, vocab_size),
        seed=req.seed,
    )


def _logit_bias(bias: dict[str, float] | None, vocab_size: int) -> tuple[tuple[int, float], ...]:
    if not bias:
        return ()
    out = []
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequestError(f"logit_bias keys must be token ids, got {key!r}", param="logit_bias") from None
        if not 0 <= token < vocab_size:
            raise InvalidRequestError(f"logit_bias token {token} is outside the vocabulary", param="logit_bias")
        if not -100 <= value <= 100:
            raise InvalidRequestError("logit_bias values must be between -100 and 100", param="logit_bias")
        out.append((token, float(value)))
    return tuple(out)


def output_limit(
    requested: int | None,
    ms: ModelSettings,
    defaults: DefaultsConfig,
    pressure: PressureLevel,
    prompt_tokens: int,
    context_tokens: int | None,
    *,
    cap_to_room: bool = False,
    param: str = "messages",
) -> int:
    """How many tokens to generate at most.

    The request's limit (else the model's, else the server's), capped by the model's
    `memory_pressure_max_tokens` for the current pressure level. A prompt that leaves no room in the
    context is a 400; so is an explicit limit that would run past it, unless `cap_to_room` (Anthropic's clients ask
    for more than any local context holds: theirs is cut to the room, and the answer says where it stopped).
    """
    limit = requested or ms.max_tokens or defaults.max_tokens
    cap = ms.memory_pressure_max_tokens.get(pressure)
    if cap is not None:
        limit = min(limit, cap)
    if context_tokens is None:
        return limit
    room = context_tokens - prompt_tokens
    if room <= 0:
        raise InvalidRequestError(
            f"the prompt has {prompt_tokens} tokens and this model's context is {context_tokens}",
            param=param,
            code="context_length_exceeded",
        )
    if requested is not None and requested > room and not cap_to_room:
        raise InvalidRequestError(
            f"prompt ({prompt_tokens} tokens) plus max_tokens ({requested}) exceeds this model's context "
            f"of {context_tokens} tokens",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return min(limit, room)
