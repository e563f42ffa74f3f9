"""Build the vision demo model offline: a tiny Qwen2-VL over the text demo's tokenizer, trained in seconds to name
the colour of a solid-colour image or PDF page (``vision_chats.py``, ``vision_training.py``).

The model is saved untrained first and loaded back as the server loads it (``vision/adapter.py``'s
``load_vision``), so its training sees the served image processor, tower, chat template and image sizes. After
training its output is sharpened as the text demo's (``build.py``): the final norm's weight, right before the
tied, bias-free output head, scales every logit until the smallest margin is ``sharp_margin``, so each answer token
is all but certain at the server's default temperature of 1. The saved folder is loaded once more and checked.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_router.demo.store import VisionRecipe
from mlx_router.demo.tokenizer import QWEN, token_ids, vocab_size
from mlx_router.demo.vision_chats import VISION_CONFIG_COMMENT, check_images, training_rows
from mlx_router.demo.vision_training import ChatEncoder, make_batch, margin, train_colours
from mlx_router.vision.adapter import load_vision
from mlx_router.vision.spec import read_vision_spec

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
ATTEMPTS = 3  # seeds tried before giving up
SECONDS_PER_ATTEMPT = 60.0


def vision_config(tok_dir: Path, recipe: VisionRecipe) -> dict[str, Any]:
    """config.json of the vision demo: a Qwen2-VL with a small text part and a smaller vision tower."""
    start, end, image, video, im_end, endoftext = token_ids(
        tok_dir,
        ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_end|>", "<|endoftext|>"),
    )
    head_dim = recipe.hidden // 4
    return {
        "_comment": VISION_CONFIG_COMMENT,
        "model_type": "qwen2_vl",
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "hidden_size": recipe.hidden,
        "num_hidden_layers": recipe.layers,
        "intermediate_size": 2 * recipe.hidden,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab_size(tok_dir),
        "max_position_embeddings": recipe.context,
        "rope_theta": 1000000.0,
        # time, height and width share the head's head_dim // 2 rotary frequencies
        "rope_scaling": {"type": "mrope", "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 8]},
        "tie_word_embeddings": True,
        "image_token_id": image,
        "video_token_id": video,
        "vision_start_token_id": start,
        "vision_end_token_id": end,
        "bos_token_id": None,
        "eos_token_id": [im_end, endoftext],
        "torch_dtype": "float32",
        "vision_config": {
            "model_type": "qwen2_vl",
            "depth": 2,
            "embed_dim": recipe.vision_width,
            "hidden_size": recipe.hidden,  # the merger's output: the language model's width
            "num_heads": 2,
            "mlp_ratio": 2,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
    }


def preprocessor_config(recipe: VisionRecipe) -> dict[str, Any]:
    """preprocessor_config.json: Qwen2-VL's image processor, images of 4 to 9 tokens (``recipe.max_pixels``)."""
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "min_pixels": 56 * 56,
        "max_pixels": recipe.max_pixels,
    }


def _new_model(config: dict[str, Any], seed: int) -> nn.Module:
    from mlx_vlm.utils import get_model_and_args, update_module_configs

    arch, _ = get_model_and_args(config)
    params = json.loads(json.dumps(config))  # from_dict may add keys to what it is given
    params.setdefault("text_config", {})
    model_config = update_module_configs(arch.ModelConfig.from_dict(params), arch, params, ["text", "vision"])
    mx.random.seed(seed)
    model = arch.Model(model_config)
    mx.eval(model.parameters())
    return cast(nn.Module, model)


def save_vision_model(model: nn.Module, config: dict[str, Any], recipe: VisionRecipe, out: Path, tok: Path) -> None:
    """Weights (float32), config, generation config, processor config, tokenizer and template into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    leaves = cast(list[tuple[str, mx.array]], tree_flatten(model.parameters()))
    weights = {name: value.astype(mx.float32) for name, value in leaves}
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    ends = {"bos_token_id": None, "eos_token_id": config["eos_token_id"]}
    (out / "generation_config.json").write_text(json.dumps(ends, indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(recipe), indent=2))
    for name in TOKENIZER_FILES:
        shutil.copy(tok / name, out / name)
    # recent checkpoints carry the template as a file too; mlx-vlm's processors read either
    (out / "chat_template.jinja").write_text(QWEN.template_path.read_text(encoding="utf-8"), encoding="utf-8")


def _load(out: Path, config: dict[str, Any]) -> tuple[nn.Module, ChatEncoder]:
    """The model in ``out`` as the server loads it, and an encoder of chats through its processor and tower."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    adapter, _, _ = load_vision(out, 0)
    spec = read_vision_spec(out, config)
    if spec is None:
        raise RuntimeError(f"{out} is not a vision model this server serves")
    return cast(nn.Module, adapter.vlm), ChatEncoder(adapter, spec, load_tokenizer(out))


def _check_margin(out: Path, config: dict[str, Any], seed: int) -> float:
    model, encoder = _load(out, config)
    chats = [encoder.image(image) for image in check_images(seed)]
    return margin(model, make_batch(model, chats, int(config["image_token_id"])))


def build_vision_demo_model(out_dir: Path, tokenizer_dir: Path, recipe: VisionRecipe | None = None) -> dict[str, Any]:
    """Write the vision demo into ``out_dir`` over the tokenizer files in ``tokenizer_dir`` (the text demo's);
    returns facts about the build. Raises RuntimeError if no seed learns every colour."""
    recipe = recipe or VisionRecipe()
    start = time.perf_counter()
    config = vision_config(tokenizer_dir, recipe)
    image_token = int(config["image_token_id"])
    fit = None
    for seed in range(recipe.seed, recipe.seed + ATTEMPTS):
        # saved untrained, then loaded as served: the processor, template and sizes are the folder's own
        save_vision_model(_new_model(config, seed), config, recipe, out_dir, tokenizer_dir)
        model, encoder = _load(out_dir, config)
        train = make_batch(model, [encoder.row(row) for row in training_rows(seed)], image_token)
        check = make_batch(model, [encoder.image(image) for image in check_images(seed)], image_token)
        fit = train_colours(
            model, train, check, lr=recipe.lr, min_margin=recipe.min_margin, max_seconds=SECONDS_PER_ATTEMPT
        )
        if not fit.converged:
            logger.warning("vision demo model: seed %d did not converge (%s); trying another", seed, fit)
            continue
        worst = min(fit.train_margin, fit.check_margin)
        _sharpen(model, recipe.sharp_margin / worst)
        save_vision_model(model, config, recipe, out_dir, tokenizer_dir)
        saved = _check_margin(out_dir, config, seed)
        if saved < 0.99 * recipe.sharp_margin:
            raise RuntimeError(f"the saved vision demo model misses its check (margin {saved:.2f})")
        return {
            "seed": seed,
            "train_steps": fit.steps,
            "train_seconds": round(fit.seconds, 2),
            "margin": round(saved, 2),
            "build_seconds": round(time.perf_counter() - start, 2),
        }
    raise RuntimeError(f"the vision demo model did not learn its colours: {fit}")


def _sharpen(model: nn.Module, factor: float) -> None:
    """Scale every output logit by ``factor``: the final norm's weight comes right before the tied, bias-free
    output head (in mlx-vlm's language model and in mlx-lm's text model over the same weights)."""
    norm = model.language_model.model.norm
    norm.weight = norm.weight * factor
