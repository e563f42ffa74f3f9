"""What the serving layer hands the engine, and what the engine hands back. Plain data: no mlx here.

The engine speaks tokens: a request is prompt token ids plus sampling parameters; the answer is a stream of
`TokenEvent`s. Text (detokenizing, stop strings, tool and reasoning parsing) is the serving layer's job, so the
thread that owns MLX spends its time on the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

EngineFinish = Literal["stop", "length", "cancelled", "error"]
ModelState = Literal["stopped", "loading", "ready", "unloading", "failed"]
Usage = dict[str, tuple[int, float]]  # model id -> (requests holding it, when it was last used: time.monotonic())


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each token. temperature 0 is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class ImageInput:
    """One image of a prompt, already at the size the model sees it (`vision/spec.py`): its tokens are the
    prompt's next run of the model's image token."""

    digest: str  # content hash: equal pixels, equal digest (keys the image-feature and prefix caches)
    width: int
    height: int
    rgb: bytes  # width * height * 3 bytes, row-major


@dataclass
class GenerationRequest:
    """One generation for the engine to run."""

    request_id: str
    model_id: str
    prompt_tokens: list[int]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    logprobs: int | None = None  # None: none; 0: the chosen token's; k: plus the top k
    grammar: str | None = None  # llguidance grammar the output must follow
    ignore_eos: bool = False  # keep generating past end-of-sequence tokens (benchmarks)
    deadline: float | None = None  # time.monotonic() after which the engine drops the request
    internal: bool = False  # the server's own (the warm-up's): not logged
    received: float = 0.0  # time.monotonic() when the HTTP request reached the server (0: unknown)
    images: list[ImageInput] = field(default_factory=list)  # in prompt order
    prompt_text: str | None = None  # a model mlx-vlm serves alone: the rendered prompt its processor expands
    encode_bytes: int = 0  # memory encoding its largest image takes (admission counts it with the KV cache)


@dataclass
class TokenLogprob:
    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class TokenEvent:
    """Tokens generated since the last event for one request; the last event has `finish_reason`."""

    tokens: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: EngineFinish | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    error: BaseException | None = None
    queue_seconds: float = 0.0  # on the first event: how long the engine held the request before its prefill
