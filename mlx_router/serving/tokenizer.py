"""The HTTP side's tokenizer: a model's transformers tokenizer, loaded without MLX.

The engine loads its own copy through mlx-lm (it needs the EOS ids and nothing else); this side renders chat
templates, encodes prompts and decodes generated tokens, all of which transformers does alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlx_router.config.model_files import read_json
from mlx_router.errors import ModelLoadError


def open_tokenizer(path: Path) -> Any:
    """The model folder's tokenizer (a transformers tokenizer); ModelLoadError says why it cannot load."""
    from transformers import AutoTokenizer  # slow to import: only when a model is first used

    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path.name}: config.json is missing")
    if "model_type" not in read_json(path / "config.json"):
        raise ModelLoadError(f"{path.name}: config.json is not valid JSON or has no model_type")
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # tokenizers fail in many ways; the client needs the reason, not a trace
        raise ModelLoadError(f"{path.name}: the tokenizer could not be loaded ({e})") from None
