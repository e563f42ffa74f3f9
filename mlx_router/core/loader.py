"""Reading a model folder: validation, tokenizer, weights, warm-up. Never touches the network.

`mlx_lm.utils` only downloads when the path does not exist; discovery hands us existing folders only, and the
CLI sets HF_HUB_OFFLINE unless downloads are allowed.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm.utils import _get_classes, load_config, load_model, load_tokenizer

from mlx_router.errors import ModelLoadError
from mlx_router.heap import trim_heap

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """Weights and tokenizer of a loaded model, and what they cost in memory."""

    model_id: str
    path: Path
    model: Any
    tokenizer: Any
    config: dict[str, Any]
    weight_bytes: int
    kv_bytes_per_token: int
    load_seconds: float
    vision: Any = None  # a vision model's VisionAdapter (`vision/adapter.py`); `model` is then its text model
    solo_processor: Any = None  # a vision model mlx-vlm serves alone: its processor; `model` is mlx-vlm's model


def read_config(path: Path, text_classes: bool = True) -> dict[str, Any]:
    """The model's config, checked for what loading needs (`text_classes`: that mlx-lm has classes for it; not
    so for a vision model mlx-vlm serves alone); ModelLoadError says what is wrong."""
    try:
        config = load_config(path)
    except FileNotFoundError:
        raise ModelLoadError(f"{path.name}: config.json is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path.name}: config.json is not valid JSON ({e})") from None
    if "model_type" not in config:
        raise ModelLoadError(f"{path.name}: config.json has no model_type")
    if not text_classes:
        return config
    try:
        _get_classes(config)
    except ValueError as e:
        raise ModelLoadError(f"{path.name}: {e}") from None
    return config


def open_tokenizer(path: Path) -> Any:
    """The model's tokenizer (mlx-lm's TokenizerWrapper, with every EOS id from the model's config)."""
    config = read_config(path, text_classes=False)
    try:
        return load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))
    except Exception as e:  # tokenizers fail in many ways; the client needs the reason, not a trace
        raise ModelLoadError(f"{path.name}: the tokenizer could not be loaded ({e})") from None


def check_weights(path: Path, text_model: bool = True) -> None:
    """Catch what would fail a load without reading the weights: safetensors files that are missing, whose
    headers are not safetensors or point past the file's end (a truncated download), and, for a text model,
    tensors whose names or shapes do not match what its config builds. ModelLoadError says what is wrong.

    MLX reads only the headers (arrays load lazily) and builds the model without evaluating it: milliseconds,
    no memory, so a load that cannot succeed fails before anything is evicted for it.
    """
    try:
        if text_model:
            load_model(path, lazy=True)
        else:  # a vision model's classes are mlx-vlm's: its files' headers are what can be checked here
            files = sorted(path.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"No safetensors found in {path}")
            for file in files:
                mx.load(str(file))
    except Exception as e:
        raise ModelLoadError(f"{path.name}: the weights could not be loaded ({e})") from None
    finally:
        gc.collect()


def kv_bytes_per_token(model: Any) -> int:
    """Bytes of KV cache one token costs, from the model's shape (0 when the shape is not the usual one)."""
    args = getattr(model, "args", None)
    layers = getattr(args, "num_hidden_layers", None)
    heads = getattr(args, "num_attention_heads", None)
    kv_heads = getattr(args, "num_key_value_heads", None) or heads
    hidden = getattr(args, "hidden_size", None)
    head_dim = getattr(args, "head_dim", None) or (hidden // heads if hidden and heads else None)
    if not (isinstance(layers, int) and isinstance(kv_heads, int) and isinstance(head_dim, int)):
        return 0
    return 2 * layers * kv_heads * head_dim * _activation_bytes(model)


def _activation_bytes(model: Any) -> int:
    """Bytes per element of the model's activations: its first floating-point parameter (norms, scales)."""
    from mlx.utils import tree_flatten

    for item in tree_flatten(model.parameters()):
        p = item[1]
        if isinstance(p, mx.array) and mx.issubdtype(p.dtype, mx.floating):
            return int(p.dtype.size)
    return 2


def load_weights(model_id: str, path: Path, tokenizer: Any) -> LoadedModel:
    """Load and evaluate the weights (on the MLX worker thread)."""
    t0 = time.perf_counter()
    read_config(path)
    try:
        model, config = load_model(path, lazy=False)
    except Exception as e:
        raise load_failed(f"{model_id}: the weights could not be loaded ({e})") from None
    return loaded_model(model_id, path, tokenizer, model, config, t0, "")


def load_sharded(model_id: str, path: Path, tokenizer: Any, group: Any, parallel: str) -> LoadedModel:
    """This rank's shard of a text model (as mlx-lm's `sharded_load`, from a local folder, without its closing
    barrier: the pool agrees on the outcome with the other ranks instead). Tensor parallel splits every layer's
    weights (`model.shard`); pipeline parallel keeps a run of whole layers (`model.model.pipeline`)."""
    t0 = time.perf_counter()
    read_config(path)
    try:
        model, config = load_model(path, lazy=True)
    except Exception as e:
        raise load_failed(f"{model_id}: the weights could not be loaded ({e})") from None
    kind = config.get("model_type", "?")
    if parallel == "pipeline" and not hasattr(getattr(model, "model", None), "pipeline"):
        raise load_failed(
            f"{model_id}: mlx-lm has no pipeline parallelism for {kind}; set distributed.parallel: tensor"
        )
    if parallel == "tensor" and not hasattr(model, "shard"):
        raise load_failed(f"{model_id}: mlx-lm has no tensor parallelism for {kind}; try the pipeline")
    try:
        if parallel == "pipeline":
            model.model.pipeline(group)
        else:
            model.shard(group)
        mx.eval(model.parameters())
    except Exception as e:
        raise load_failed(f"{model_id}: its {parallel}-parallel shard could not be loaded ({e})") from None
    how = f" ({parallel} shard {group.rank()} of {group.size()})"
    return loaded_model(model_id, path, tokenizer, model, config, t0, how)


def load_vision_weights(model_id: str, path: Path, tokenizer: Any, feature_cache_bytes: int) -> LoadedModel:
    """A vision model: mlx-vlm's model and mlx-lm's text model over the same arrays (on the MLX thread)."""
    from mlx_router.vision.adapter import load_vision

    t0 = time.perf_counter()
    read_config(path)
    try:
        vision, model, config = load_vision(path, feature_cache_bytes)
    except ModelLoadError as e:
        raise load_failed(e.message) from None
    return loaded_model(model_id, path, tokenizer, model, config, t0, " with its vision tower", vision=vision)


def load_solo_vision(model_id: str, path: Path, tokenizer: Any) -> LoadedModel:
    """A vision model mlx-vlm serves alone: its model and processor (on the MLX thread)."""
    from mlx_vlm.utils import load_model as load_vlm_model
    from mlx_vlm.utils import load_processor

    t0 = time.perf_counter()
    config = read_config(path, text_classes=False)
    try:
        model = load_vlm_model(path, lazy=False)
        processor = load_processor(path, True, eos_token_ids=config.get("eos_token_id"))
    except Exception as e:
        raise load_failed(f"{model_id}: the vision model could not be loaded ({e})") from None
    language = getattr(model, "language_model", model)
    return loaded_model(
        model_id,
        path,
        tokenizer,
        model,
        config,
        t0,
        " (mlx-vlm, served alone)",
        language=language,
        solo_processor=processor,
    )


def load_failed(message: str) -> ModelLoadError:
    """A load that failed half way: what it allocated goes back before the error reaches the client."""
    gc.collect()
    mx.clear_cache()
    return ModelLoadError(message)


def loaded_model(
    model_id: str,
    path: Path,
    tokenizer: Any,
    model: Any,
    config: dict[str, Any],
    t0: float,
    how: str,
    language: Any = None,
    **extra: Any,
) -> LoadedModel:
    """What a load made, with its costs (weights on disk, KV bytes a token, seconds), logged in one line."""
    weight_bytes = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    loaded = LoadedModel(
        model_id=model_id,
        path=path,
        model=model,
        tokenizer=tokenizer,
        config=config,
        weight_bytes=weight_bytes,
        kv_bytes_per_token=kv_bytes_per_token(language if language is not None else model),
        load_seconds=time.perf_counter() - t0,
        **extra,
    )
    logger.info("loaded %s%s in %.2fs (%.2f GB of weights)", model_id, how, loaded.load_seconds, weight_bytes / 1e9)
    return loaded


def free_memory() -> None:
    """Give freed MLX buffers back to the system: MLX's buffer cache, then the C heap (glibc)."""
    gc.collect()
    mx.clear_cache()
    trim_heap()
