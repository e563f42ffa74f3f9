"""Reading a model folder's JSON files (config.json, preprocessor_config.json, ...): plain Python, used on both
sides of the engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def context_length(config: dict[str, Any]) -> int | None:
    """A model's context length from its config.json (a vision model's is in its text part)."""
    for source in (config, config.get("text_config") or {}):
        value = source.get("max_position_embeddings")
        if isinstance(value, int) and value > 0:
            return value
    return None
