"""Loading embedding models (on the MLX worker thread): decoders through mlx-lm's classes, encoders through
mlx-embeddings'.

A decoder embedding model needs only its backbone (`model.model`), and the published checkpoints differ from
what mlx-lm's `Model` expects: Qwen's own Qwen3-Embedding files hold the backbone's tensors without the `model.`
prefix (`embed_tokens.weight`, `layers.0...`, `norm.weight`), and Qwen3-Embedding-8B (and its mlx-community
conversions) says `tie_word_embeddings: false` yet ships no `lm_head.weight`. So the backbone's tensors are
prefixed when they are not, and the head is built tied (never used, never read: no weights of its own).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

from mlx_lm.utils import _get_classes, load_model

from mlx_router.core.loader import LoadedModel, load_failed, loaded_model, read_config
from mlx_router.errors import ModelLoadError

HEADLESS = {"tie_word_embeddings": True}  # no LM head of its own to load


def _backbone_classes(config: dict[str, Any]) -> tuple[type, type]:
    """mlx-lm's classes for `config`, its `sanitize` taking backbone tensors with or without `model.`."""
    model_class, args_class = _get_classes(config)

    class EmbeddingModel(model_class):  # type: ignore[misc, valid-type]
        def sanitize(self, weights: dict[str, Any]) -> dict[str, Any]:
            roots = set(self.keys())
            if "model" in roots:
                weights = {k if k.split(".", 1)[0] in roots else f"model.{k}": v for k, v in weights.items()}
            weights.pop("lm_head.weight", None)
            base = getattr(super(), "sanitize", None)
            return base(weights) if base is not None else weights

    EmbeddingModel.__name__ = f"Embedding{model_class.__name__}"
    return EmbeddingModel, args_class


def check_decoder_weights(path: Path) -> None:
    """The checkpoint's tensor names and shapes against the backbone, reading headers only (see
    `loader.check_weights`). ModelLoadError says what is wrong."""
    try:
        load_model(path, lazy=True, model_config=HEADLESS, get_model_classes=_backbone_classes)
    except Exception as e:
        raise ModelLoadError(f"{path.name}: the weights could not be loaded ({e})") from None
    finally:
        gc.collect()


def load_decoder_embedding(model_id: str, path: Path, tokenizer: Any) -> LoadedModel:
    """A decoder embedding model (Qwen3-Embedding): mlx-lm's model, its backbone's weights."""
    t0 = time.perf_counter()
    read_config(path)
    try:
        model, config = load_model(path, lazy=False, model_config=HEADLESS, get_model_classes=_backbone_classes)
    except Exception as e:
        raise load_failed(f"{model_id}: the weights could not be loaded ({e})") from None
    return loaded_model(model_id, path, tokenizer, model, config, t0, " (embeddings)")


def load_encoder_embedding(model_id: str, path: Path, tokenizer: Any) -> LoadedModel:
    """A bidirectional embedding encoder (BERT and kin) through mlx-embeddings' classes."""
    from mlx_embeddings.utils import load_model as load_encoder

    t0 = time.perf_counter()
    config = read_config(path, text_classes=False)
    try:
        model = load_encoder(path, lazy=False)
    except Exception as e:
        raise load_failed(f"{model_id}: the embedding model could not be loaded ({e})") from None
    return loaded_model(model_id, path, tokenizer, model, config, t0, " (embeddings, mlx-embeddings)")
