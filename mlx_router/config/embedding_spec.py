"""Which model folders are embedding models, and how their vectors are pooled. Reads JSON files only (no mlx).

A folder is an embedding model when
  1. `models.<id>.embedding` says so (true or false wins over everything below; see `Settings.embedding_spec`);
  2. it holds sentence-transformers' files: a `modules.json` with a `Pooling` module, whose `config.json`
     (`1_Pooling/config.json` in every published checkpoint) names the pooling (`pooling_mode_lasttoken` for
     Qwen3-Embedding, `pooling_mode_mean_tokens` or `pooling_mode_cls_token` for others) and a `Normalize`
     module (L2 normalisation). This is how Qwen/Qwen3-Embedding-* ships: a plain Qwen3ForCausalLM config whose
     only embedding mark is these files;
  3. its `model_type` is a bidirectional encoder (BERT and kin): such a model cannot generate, so it is one.

A decoder (a causal model mlx-lm has classes for, e.g. qwen3) runs through mlx-lm's model class: the hidden
states before its LM head. A bidirectional encoder needs mlx-embeddings' classes (`ENCODER_TYPES`).
Matryoshka truncation (`dimensions`) is offered for Qwen3 decoders with last-token pooling: Qwen3-Embedding was
trained for it (its model card: any size from 32 up to the hidden size); other models were not, and get a 400.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Literal

Pooling = Literal["last", "mean", "cls"]

# model types of bidirectional text encoders that mlx-embeddings has classes for (its models/ package)
ENCODER_TYPES = frozenset({"bert", "xlm-roberta", "xlm_roberta", "modernbert"})
# families whose last-token embedding models were trained with Matryoshka representation learning
MATRYOSHKA_TYPES = frozenset({"qwen3"})

_POOLING_KEYS: tuple[tuple[str, Pooling], ...] = (
    ("pooling_mode_lasttoken", "last"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_cls_token", "cls"),
)
_POOLING_MODULE = "sentence_transformers.models.Pooling"
_NORMALIZE_MODULE = "sentence_transformers.models.Normalize"


@dataclass(frozen=True)
class EmbeddingSpec:
    """How a model's vectors are made."""

    pooling: Pooling
    normalize: bool  # L2-normalised vectors
    encoder: bool  # a bidirectional encoder (mlx-embeddings); else a decoder through mlx-lm
    matryoshka: bool  # `dimensions` may truncate its vectors
    source: str  # why it is one, for logs and errors


def default_spec(config: dict[str, Any], source: str) -> EmbeddingSpec:
    """The spec of a model forced to embeddings without sentence-transformers files: last-token pooling for a
    decoder (Qwen3-Embedding's), mean pooling for an encoder; both L2-normalised."""
    model_type = str(config.get("model_type", ""))
    encoder = model_type in ENCODER_TYPES
    pooling: Pooling = "mean" if encoder else "last"
    return EmbeddingSpec(pooling, True, encoder, _matryoshka(model_type, pooling, encoder), source)


def _matryoshka(model_type: str, pooling: Pooling, encoder: bool) -> bool:
    return not encoder and pooling == "last" and model_type in MATRYOSHKA_TYPES


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def sentence_transformers_spec(folder: str, config: dict[str, Any]) -> EmbeddingSpec | str | None:
    """The spec read from the folder's sentence-transformers files; None without them; a string saying what is
    wrong when they are there but unusable (a pooling this server does not do)."""
    modules = _read_json(os.path.join(folder, "modules.json"))
    if not isinstance(modules, list):
        return None
    kinds = {m.get("type"): m for m in modules if isinstance(m, dict)}
    pooling_module = kinds.get(_POOLING_MODULE)
    if pooling_module is None:
        return None
    pooling_config = _read_json(os.path.join(folder, str(pooling_module.get("path") or ""), "config.json"))
    if not isinstance(pooling_config, dict):
        return "modules.json names a Pooling module whose config.json is missing or not JSON"
    modes = [mode for key, mode in _POOLING_KEYS if pooling_config.get(key) is True]
    if len(modes) != 1:
        asked = sorted(k for k, v in pooling_config.items() if k.startswith("pooling_mode_") and v is True)
        return f"its pooling ({', '.join(asked) or 'none'}) is not one of last-token, mean or CLS"
    model_type = str(config.get("model_type", ""))
    encoder = model_type in ENCODER_TYPES
    normalize = _NORMALIZE_MODULE in kinds
    return EmbeddingSpec(
        modes[0], normalize, encoder, _matryoshka(model_type, modes[0], encoder), "sentence-transformers"
    )


def folder_spec(folder: str, config: dict[str, Any]) -> EmbeddingSpec | str | None:
    """What discovery records for a folder: its spec, None (not an embedding model), or why it cannot serve."""
    spec = sentence_transformers_spec(folder, config)
    if spec is not None:
        return spec
    if str(config.get("model_type", "")) in ENCODER_TYPES:
        return default_spec(config, "model_type")
    return None
