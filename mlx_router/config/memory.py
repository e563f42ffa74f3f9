"""Memory estimates from a model's files, before it is loaded (the server and helper_tools share them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlx_router.config.discovery import ModelEntry
from mlx_router.config.model_files import read_json
from mlx_router.config.settings import Settings

GB = 1024**3


def estimate_model_bytes(entry: ModelEntry, settings: Settings) -> int:
    """What a model costs loaded: its weights (or the configured `required_memory_gb`) times `safety_margin`."""
    ms = settings.model_settings(entry.id)
    base = ms.required_memory_gb * GB if ms.required_memory_gb else entry.size_bytes
    return int(base * settings.defaults.safety_margin)


def kv_bytes_per_token(config: dict[str, Any]) -> int:
    """KV cache bytes per token from config.json: 2 (K, V) x layers x KV heads x head size x bytes per value.

    The activation dtype comes from the config (float32: 4 bytes, else 2). 0 when the config lacks the shape
    (some multimodal layouts); the server then measures it from the loaded model.
    """
    args = config if "num_hidden_layers" in config else config.get("text_config") or {}
    layers, heads = args.get("num_hidden_layers"), args.get("num_attention_heads")
    kv_heads = args.get("num_key_value_heads") or heads
    hidden = args.get("hidden_size")
    head_dim = args.get("head_dim") or (hidden // heads if isinstance(hidden, int) and heads else None)
    if not (isinstance(layers, int) and isinstance(kv_heads, int) and isinstance(head_dim, int)):
        return 0
    dtype = str(config.get("torch_dtype") or config.get("dtype") or args.get("torch_dtype") or "")
    return 2 * layers * kv_heads * head_dim * (4 if dtype == "float32" else 2)


def read_model_config(path: Path) -> dict[str, Any]:
    """A model folder's config.json, or {} when it cannot be read."""
    return read_json(Path(path) / "config.json")
