"""Parameter discovery: a `models.<id>` entry for one model from its files and a short run on this machine.

Read: config.json (context length, vision tower), generation_config.json (the authors' sampling defaults), the
chat template and vocabulary (the tool-call and reasoning formats, detected as the server detects them).
Measured (`mlx_router.core.measure`): the memory the loaded weights take, the KV cache per token, prefill and
decode speed. From those: `max_tokens`, sampling defaults, `required_memory_gb`, `supports_tools`,
`supports_vision`, checked by the same pydantic model the server reads config files with.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_router.config.discovery import ModelEntry
from mlx_router.config.memory import kv_bytes_per_token, read_model_config
from mlx_router.config.settings import ConfigError, ModelSettings, Settings, parse_settings

GB = 1024**3
# generation_config.json key -> models.<id> key
SAMPLING_KEYS = {
    "temperature": "temp",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
}
BASE_MAX_TOKENS = 4096  # a full answer from most models
REASONING_MAX_TOKENS = 8192  # thinking comes before the answer and needs room of its own
KV_SHARE = 0.25  # a request of max_tokens (and as long a prompt) may take this share of the memory beside the model
TIMEOUT_SHARE = 0.5  # generating max_tokens may take this share of defaults.timeout (queue, load, prefill: the rest)
ROUNDING = 256


class TuneError(ValueError):
    """The entry cannot be made or written; the message says why."""


@dataclass(frozen=True)
class ModelFacts:
    """What a model's files say about it."""

    entry: ModelEntry
    config: dict[str, Any]
    generation: dict[str, Any]  # generation_config.json ({} when absent)
    context_tokens: int | None
    tool_format: str | None  # detected tool-call format (mlx_router/parsing/registry.py)
    reasoning_format: str | None
    vision_path: str | None  # "handover" or "solo" when the server can read images with it, else None


@dataclass
class Tuning:
    """The proposed `models.<id>` entry and why each value is what it is."""

    entry: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def context_tokens(config: dict[str, Any]) -> int | None:
    """The model's context length (max_position_embeddings, also under text_config), as the server reads it."""
    for source in (config, config.get("text_config") or {}):
        value = source.get("max_position_embeddings")
        if isinstance(value, int) and value > 0:
            return value
    return None


def detect_formats(entry: ModelEntry, settings: Settings) -> tuple[str | None, str | None]:
    """(tool-call format, reasoning format) of the model, found as the server finds them: from its tokenizer's
    chat template (or the configured one) and vocabulary; a configured parser name wins."""
    from mlx_router.parsing.registry import detect_reasoning_parser, detect_tool_parser
    from mlx_router.serving.templates import ChatTemplateRenderer
    from mlx_router.serving.tokenizer import open_tokenizer

    ms = settings.model_settings(entry.id)
    tokenizer = open_tokenizer(entry.path)
    renderer = ChatTemplateRenderer(tokenizer, ms.chat_template)
    vocab = tokenizer.get_vocab().keys()
    tools = ms.tool_parser or detect_tool_parser(renderer.source, vocab)
    reasoning = ms.reasoning_parser or detect_reasoning_parser(renderer.source, vocab)
    return tools, reasoning


def read_facts(entry: ModelEntry, settings: Settings) -> ModelFacts:
    """Everything tune reads from the model's folder (the tokenizer is loaded; the weights are not)."""
    from mlx_router.core.loader import read_config  # imports mlx

    vision_path = Settings().vision_path(entry)  # what the model can do, whatever the config says now
    read_config(entry.path, text_classes=vision_path != "solo")  # ModelLoadError: a type no loader knows
    config = read_model_config(entry.path)
    tools, reasoning = detect_formats(entry, settings)
    return ModelFacts(
        entry=entry,
        config=config,
        generation=read_json(entry.path / "generation_config.json"),
        context_tokens=context_tokens(config),
        tool_format=tools,
        reasoning_format=reasoning,
        vision_path=vision_path,
    )


def sampling_defaults(generation: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The sampling keys of a models entry from generation_config.json, and notes on values left out."""
    values: dict[str, Any] = {}
    notes: list[str] = []
    if generation.get("do_sample") is False:
        return {"temp": 0.0}, ["generation_config.json: do_sample is false: greedy decoding (temp 0)"]
    for source, key in SAMPLING_KEYS.items():
        if source not in generation or generation[source] is None:
            continue
        try:
            ModelSettings.model_validate({key: generation[source]})
        except ValueError:
            notes.append(f"generation_config.json: {source} {generation[source]!r} is out of range; left out")
            continue
        values[key] = generation[source]
    if values:
        notes.append("sampling defaults: " + ", ".join(f"{k} {v}" for k, v in values.items()) + " (generation_config)")
    elif generation:
        notes.append("generation_config.json sets no sampling defaults: the server's defaults apply")
    else:
        notes.append("no generation_config.json: the server's sampling defaults apply")
    return values, notes


def round_down(n: int) -> int:
    """`n` down to a multiple of 256 (small values stay as they are)."""
    return n if n < 2 * ROUNDING else n - n % ROUNDING


def recommend_max_tokens(
    facts: ModelFacts,
    settings: Settings,
    kv_per_token: int,
    room_bytes: int | None,
    decode_tokens_per_s: float | None,
) -> tuple[int, list[str]]:
    """max_tokens: a full answer (longer for reasoning models), within half the context, a quarter of the
    memory beside the model for one request's KV (prompt and output), and half the server's timeout at the
    measured decode speed."""
    want = REASONING_MAX_TOKENS if facts.reasoning_format else BASE_MAX_TOKENS
    limits = [(want, "a reasoning model's thinking and answer" if facts.reasoning_format else "a full answer")]
    if facts.context_tokens:
        limits.append((facts.context_tokens // 2, f"half the context of {facts.context_tokens} tokens"))
    if room_bytes is not None and kv_per_token > 0:
        n = int(max(0, room_bytes) * KV_SHARE / (2 * kv_per_token))
        limits.append((n, f"KV of prompt and output within {KV_SHARE:.0%} of the {room_bytes / GB:.2f} GB beside it"))
    if decode_tokens_per_s:
        seconds = settings.defaults.timeout * TIMEOUT_SHARE
        limits.append(
            (int(decode_tokens_per_s * seconds), f"{seconds:g} s at {decode_tokens_per_s:.1f} tok/s measured")
        )
    value, reason = min(limits, key=lambda item: item[0])
    chosen = max(1, round_down(value))
    return chosen, [f"max_tokens {chosen}: bounded by {reason}"]


def recommend(facts: ModelFacts, measurement: Any | None, settings: Settings, budget_bytes: int) -> Tuning:
    """The `models.<id>` entry for the model (`measurement`: a core.measure.Measurement, or None)."""
    tuning = Tuning(entry={})
    sampling, notes = sampling_defaults(facts.generation)
    weights = measurement.weights_bytes if measurement is not None else None
    kv = (measurement.kv_bytes_per_token if measurement is not None else 0) or kv_bytes_per_token(facts.config)
    estimate = (weights or facts.entry.size_bytes) * settings.defaults.safety_margin
    speed = measurement.decode_tokens_per_s if measurement is not None else None
    max_tokens, max_notes = recommend_max_tokens(facts, settings, kv, int(budget_bytes - estimate), speed)
    tuning.entry["max_tokens"] = max_tokens
    tuning.entry.update(sampling)
    if weights:
        tuning.entry["required_memory_gb"] = max(0.01, math.ceil(weights / GB * 100) / 100)
        notes.append(f"required_memory_gb {tuning.entry['required_memory_gb']}: the loaded weights, measured")
    else:
        notes.append("required_memory_gb left out (not measured): the server counts the weights' file size")
    tuning.entry["supports_tools"] = facts.tool_format is not None
    tuning.entry["supports_vision"] = facts.vision_path is not None
    notes.append(f"tool-call format: {facts.tool_format or 'none detected'}")
    if facts.reasoning_format:
        notes.append(f"reasoning format: {facts.reasoning_format}")
    if facts.entry.vision:
        how = f"images via {facts.vision_path}" if facts.vision_path else "mlx-vlm has no such family: text only"
        notes.append(f"vision model ({facts.entry.vision}): {how}")
    tuning.notes = max_notes + notes
    ModelSettings.model_validate(tuning.entry)  # the server must accept what is written
    return tuning


def write_entry(path: Path, model_id: str, entry: dict[str, Any], force: bool) -> bool:
    """Put `entry` at `models.<model_id>` of the config file at `path` (created when missing); True when an
    entry was there. An existing entry is kept unless `force`, which replaces the keys tune sets and keeps the
    others. The whole file is validated as the server would before it is replaced (atomically)."""
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise TuneError(f"{path}: not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise TuneError(f"{path}: the top level must be a JSON object")
    models = data.setdefault("models", {})
    if not isinstance(models, dict):
        raise TuneError(f"{path}: models must be a JSON object")
    existed = model_id in models
    if existed and not force:
        raise TuneError(f"{path} has models.{model_id} already; --force replaces the keys tune sets (others are kept)")
    old = models.get(model_id)
    models[model_id] = {**(old if isinstance(old, dict) else {}), **entry}
    try:
        parse_settings(data, str(path))
    except ConfigError as e:
        raise TuneError(str(e)) from None
    _replace(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return existed


def _replace(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def measurement_lines(m: Any) -> list[str]:
    """A measurement as text lines (`m`: core.measure.Measurement)."""
    lines = [
        f"measured with {m.backend}: loaded in {m.load_seconds:.2f} s, weights {m.weights_bytes / GB:.3f} GB, "
        f"peak {m.peak_bytes / GB:.3f} GB",
        f"  KV cache: {m.kv_bytes_per_token} bytes per token ({m.kv_bytes_per_token * 1000 / GB:.4f} GB per 1k)",
        f"  prefill: {m.prompt_tokens} tokens in {m.prefill_seconds:.3f} s ({m.prefill_tokens_per_s:.0f} tok/s); "
        f"decode: {m.decode_tokens} tokens in {m.decode_seconds:.3f} s ({m.decode_tokens_per_s:.1f} tok/s)",
    ]
    if m.image_seconds is not None:
        lines.append(f"  one image prompt: {m.image_tokens} tokens prefilled in {m.image_seconds:.3f} s")
    elif m.image_error:
        lines.append(f"  one image prompt: not timed ({m.image_error})")
    return lines
