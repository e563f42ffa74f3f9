"""Measuring one model on this machine: the memory its weights take, its KV cache per token, and its prefill
and decode speed, from a short load, prefill and greedy decode (`mlx-router models tune`).

Text models go through mlx-lm, vision models through mlx-vlm (their vision tower counts in the weights, and one
small image prompt is timed too). This runs in the tool's own process, never in the server's engine.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlx_router.core.loader import kv_bytes_per_token

IMAGE_SIDE = 224  # the timed image: small enough for any family's processor, big enough to take a few tokens


@dataclass(frozen=True)
class Measurement:
    """What one short run of a model showed."""

    backend: str  # "mlx-lm" or "mlx-vlm"
    load_seconds: float
    weights_bytes: int  # MLX memory in use once the weights are loaded
    kv_bytes_per_token: int  # read from the KV cache after the run (from the model's shape if unreadable)
    peak_bytes: int  # MLX peak memory over the load and the run
    prompt_tokens: int
    prefill_seconds: float  # the prompt, up to its first generated token
    decode_tokens: int
    decode_seconds: float
    image_tokens: int | None = None  # vision: the timed image prompt's length
    image_seconds: float | None = None  # vision: that prompt's prefill, image encoding included
    image_error: str | None = None  # vision: why the image could not be timed

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0


def measure_model(path: Path, vision: bool, prompt_tokens: int = 256, decode_tokens: int = 32) -> Measurement:
    """Load the model in `path` (mlx-vlm when `vision`, else mlx-lm), prefill `prompt_tokens` tokens and decode
    `decode_tokens` greedily; the model is released before returning."""
    if prompt_tokens < 2 or decode_tokens < 1:
        raise ValueError("measuring needs a prompt of 2 tokens or more and 1 decoded token or more")
    gc.collect()
    mx.clear_cache()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    model, language, processor = _load(path, vision)
    load_seconds = time.perf_counter() - t0
    weights = max(0, mx.get_active_memory() - before)
    try:
        ids = _prompt_ids(_vocab_size(language), prompt_tokens)
        cache = _make_cache(language, vision)
        steps = _steps(model, ids, cache, decode_tokens, vision)
        prefill, decode = _time_steps(steps)
        per_token = _cache_bytes_per_token(cache) or kv_bytes_per_token(language)
        image = _time_image(model, processor) if vision else (None, None, None)
        return Measurement(
            backend="mlx-vlm" if vision else "mlx-lm",
            load_seconds=load_seconds,
            weights_bytes=weights,
            kv_bytes_per_token=per_token,
            peak_bytes=max(0, mx.get_peak_memory() - before),
            prompt_tokens=prompt_tokens,
            prefill_seconds=prefill,
            decode_tokens=decode_tokens,
            decode_seconds=decode,
            image_tokens=image[0],
            image_seconds=image[1],
            image_error=image[2],
        )
    finally:
        del model, language, processor
        gc.collect()
        mx.clear_cache()


def _load(path: Path, vision: bool) -> tuple[Any, Any, Any]:
    """(model, its text model, mlx-vlm's processor or None)."""
    if vision:
        from mlx_vlm.utils import load_model as load_vlm_model
        from mlx_vlm.utils import load_processor

        model = load_vlm_model(path, lazy=False)
        processor = load_processor(path, True)
        return model, model.language_model, processor
    from mlx_lm.utils import load_model

    model, _ = load_model(path, lazy=False)
    return model, model, None


def _vocab_size(language: Any) -> int:
    args = getattr(language, "args", None) or getattr(language, "config", None)
    size = getattr(args, "vocab_size", None)
    return int(size) if isinstance(size, int) and size > 0 else 1000


def _prompt_ids(vocab: int, n: int) -> mx.array:
    """A deterministic prompt spread over the vocabulary (its content does not change the cost)."""
    return mx.array([(7919 * i + 13) % vocab for i in range(n)])


def _make_cache(language: Any, vision: bool) -> list[Any]:
    if vision:
        from mlx_vlm.models import cache as vlm_cache

        return list(vlm_cache.make_prompt_cache(language))
    from mlx_lm.models.cache import make_prompt_cache

    return list(make_prompt_cache(language))


def _steps(model: Any, ids: mx.array, cache: list[Any], decode_tokens: int, vision: bool) -> Iterator[Any]:
    """Greedy generation: the first item comes once the prompt is prefilled, then one per decoded token."""
    if vision:
        from mlx_vlm.generate import generate_step as vlm_step

        return vlm_step(ids[None], model, None, None, max_tokens=decode_tokens + 1, prompt_cache=cache)
    from mlx_lm.generate import generate_step

    return generate_step(ids, model, max_tokens=decode_tokens + 1, prompt_cache=cache)


def _time_steps(steps: Iterator[Any]) -> tuple[float, float]:
    """(seconds to the first token, seconds for the rest)."""
    t0 = time.perf_counter()
    next(steps)
    t1 = time.perf_counter()
    for _ in steps:
        pass
    return t1 - t0, time.perf_counter() - t1


def _cache_bytes_per_token(cache: list[Any]) -> int:
    """KV bytes one token takes, from the cache's arrays (keys and values are [batch, heads, slots, dim]; caches
    of another shape, such as a state-space model's, do not grow with tokens and count 0)."""
    total = 0
    for layer in cache:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if isinstance(keys, mx.array) and isinstance(values, mx.array) and keys.ndim == 4 and keys.shape[2]:
            total += (keys.nbytes + values.nbytes) // keys.shape[2]
    return total


def _time_image(model: Any, processor: Any) -> tuple[int | None, float | None, str | None]:
    """(prompt tokens, prefill seconds, None) for one image prompt, or (None, None, why it failed)."""
    try:
        from mlx_vlm.generate import generate_step
        from mlx_vlm.prompt_utils import apply_chat_template
        from mlx_vlm.utils import prepare_inputs
        from PIL import Image

        prompt = apply_chat_template(processor, model.config, "Describe the image.", num_images=1)
        picture = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), (200, 40, 40))
        inputs = prepare_inputs(processor, images=[picture], prompts=[prompt])
        ids = inputs["input_ids"]
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "pixel_values", "attention_mask")}
        language = model.language_model
        for stale in ("_position_ids", "_rope_deltas"):  # Qwen-VL keeps the last image prompt's positions
            if getattr(language, stale, None) is not None:
                setattr(language, stale, None)
        steps = generate_step(
            ids, model, inputs.get("pixel_values"), inputs.get("attention_mask"), max_tokens=1, **extra
        )
        seconds, _ = _time_steps(steps)
        return int(ids.shape[1]), seconds, None
    except Exception as e:  # an image is a bonus: the text measurement stands without it
        return None, None, f"{type(e).__name__}: {e}"
