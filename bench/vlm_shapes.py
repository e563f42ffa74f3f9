"""Random-weight Qwen2.5-VL models of given shapes, for timing only (`make_model.py OUT SHAPE --tokenizer DIR`).

The folder is what mlx-vlm and mlx-router both load: config.json (mlx-vlm's `qwen2_5_vl` layout, which mlx-lm's
`qwen2_vl` text class also reads), model.safetensors, preprocessor_config.json (Qwen2.5-VL's real processor
settings: patch 14, merge 2, 3,136 to 12,845,056 pixels), generation_config.json and the tokenizer (the bench
BPE of `make_tokenizer.py`, which holds Qwen's vision tokens, with Qwen2.5-VL's own chat template: no thinking
block, which the bench template adds when a server renders with `enable_thinking` false, as mlx-vlm does).

Greedy output never ends by itself and is always text: the output-head rows of special tokens, of ids that
decode to nothing printable and of ids past the tokenizer (the 7B's vocabulary of 152,064 is larger than the
bench tokenizer's) are zero, so their logit (0) never beats the best of the random ones. With `--bits` < 16 the
text model is quantized (embedding, layers, head), the vision tower stays in `--dtype`, as mlx-community's
4-bit Qwen2.5-VL checkpoints do.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

# text: hidden, layers, heads, kv heads, intermediate, vocab (None: the tokenizer's); vision: depth, width,
# heads, intermediate, full-attention blocks (the others attend within 112-pixel windows)
VLM_SHAPES: dict[str, dict[str, Any]] = {
    # big enough on a 2-core CPU that the vision tower and prefill are measurable, small enough to run 32 streams
    "qwen2_5_vl_cpu": dict(
        text=dict(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=1024, vocab=None),
        vision=dict(depth=4, width=128, heads=2, intermediate=352, fullatt=[3]),
    ),
    # Qwen2.5-VL-7B-Instruct's real shape (its config.json)
    "qwen2_5_vl_7b": dict(
        text=dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064),
        vision=dict(depth=32, width=1280, heads=16, intermediate=3420, fullatt=[7, 15, 23, 31]),
    ),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Qwen2-VL's and Qwen2.5-VL's chat template (their tokenizer_config.json)
QWEN_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _token_ids(tok_dir: Path) -> dict[str, int]:
    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    return {t["content"]: int(t["id"]) for t in data["added_tokens"]}


def _tokenizer_size(tok_dir: Path) -> int:
    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    return max([*data["model"]["vocab"].values(), *(t["id"] for t in data["added_tokens"])]) + 1


def vlm_config(shape: str, tok_dir: Path) -> dict[str, Any]:
    """config.json of `shape` over the tokenizer at `tok_dir`."""
    text, vision = VLM_SHAPES[shape]["text"], VLM_SHAPES[shape]["vision"]
    ids = _token_ids(tok_dir)
    head_dim = text["hidden"] // text["heads"]
    return {
        "model_type": "qwen2_5_vl",
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "hidden_size": text["hidden"],
        "num_hidden_layers": text["layers"],
        "num_attention_heads": text["heads"],
        "num_key_value_heads": text["kv_heads"],
        "intermediate_size": text["intermediate"],
        "vocab_size": text["vocab"] or _tokenizer_size(tok_dir),
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 128000,
        "rope_theta": 1000000.0,
        # time, height and width share head_dim // 2 rotary frequencies (the 7B: 16, 24, 24)
        "rope_scaling": {"type": "mrope", "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]},
        "sliding_window": 32768,
        "use_sliding_window": False,
        "tie_word_embeddings": False,
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "bos_token_id": None,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "vision_config": {
            "model_type": "qwen2_5_vl",
            "depth": vision["depth"],
            "hidden_size": vision["width"],
            "intermediate_size": vision["intermediate"],
            "num_heads": vision["heads"],
            "out_hidden_size": text["hidden"],
            "hidden_act": "silu",
            "in_channels": 3,
            "in_chans": 3,
            "patch_size": 14,
            "spatial_patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": vision["fullatt"],
            "tokens_per_second": 2,
        },
    }


def preprocessor_config() -> dict[str, Any]:
    """Qwen2.5-VL's preprocessor_config.json (as in the 3B, 7B and 72B checkpoints)."""
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "rescale_factor": 1 / 255,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "min_pixels": 3136,
        "max_pixels": 12845056,
    }


def silent_ids(tok_dir: Path, vocab: int) -> list[int]:
    """Ids whose output-head row is zeroed: special tokens, ids that decode to nothing printable, ids past the
    tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    special = set(_token_ids(tok_dir).values())
    size = _tokenizer_size(tok_dir)
    out = []
    for i in range(vocab):
        if i >= size or i in special:
            out.append(i)
            continue
        text = tok.decode([i])
        if not text.strip() or "\ufffd" in text or not text.isprintable():
            out.append(i)
    return out


def _make_model(config: dict[str, Any]) -> Any:
    from mlx_vlm.utils import get_model_and_args, update_module_configs

    arch, _ = get_model_and_args(config)
    params = json.loads(json.dumps(config))  # from_dict may add keys to what it is given
    params.setdefault("text_config", {})
    model_config = update_module_configs(arch.ModelConfig.from_dict(params), arch, params, ["text", "vision"])
    return arch.Model(model_config)


def count_params(model: Any) -> tuple[int, int]:
    """(text, vision) parameter counts, from shapes (nothing evaluated)."""
    text = vision = 0
    leaves: list[tuple[str, Any]] = tree_flatten(model.parameters())  # type: ignore[assignment]
    for name, value in leaves:
        if name.startswith("vision_tower"):
            vision += int(value.size)
        else:
            text += int(value.size)
    return text, vision


def build_vlm(
    out: str, shape: str, tokenizer: str, bits: int = 4, dtype: str = "float16", seed: int = 0, dry_run: bool = False
) -> dict[str, Any]:
    """Write a random `shape` model to `out` (see the module docstring); with `dry_run` only count parameters."""
    t0 = time.time()
    tok_dir = Path(tokenizer)
    config = vlm_config(shape, tok_dir)
    mx.random.seed(seed)
    model = _make_model(config)
    text_params, vision_params = count_params(model)
    facts: dict[str, Any] = {"shape": shape, "text_params": text_params, "vision_params": vision_params}
    if dry_run:
        print(json.dumps(facts))
        return facts
    head = model.language_model.lm_head
    rows = mx.array(silent_ids(tok_dir, config["vocab_size"]))
    head.weight = head.weight * (1 - mx.zeros((head.weight.shape[0], 1)).at[rows].add(1))
    model.set_dtype(getattr(mx, dtype))
    if bits < 16:
        nn.quantize(
            model,
            group_size=64,
            bits=bits,
            class_predicate=lambda p, m: p.startswith("language_model") and hasattr(m, "to_quantized"),
        )
        config["quantization"] = {"group_size": 64, "bits": bits}
    os.makedirs(out, exist_ok=True)
    weights = dict(tree_flatten(model.parameters()))
    for value in weights.values():
        mx.eval(value)  # one array at a time: the 7B's float32 initial values never all exist at once
    mx.save_safetensors(os.path.join(out, "model.safetensors"), weights, metadata={"format": "mlx"})
    (Path(out) / "config.json").write_text(json.dumps(dict(config, torch_dtype=dtype), indent=1))
    generation = {"bos_token_id": None, "eos_token_id": config["eos_token_id"], "do_sample": False}
    (Path(out) / "generation_config.json").write_text(json.dumps(generation, indent=1))
    (Path(out) / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=1))
    for name in TOKENIZER_FILES:
        if (tok_dir / name).exists():
            shutil.copy(tok_dir / name, Path(out) / name)
    tok_config = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok_config["chat_template"] = QWEN_VL_TEMPLATE
    (Path(out) / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2), encoding="utf-8")
    (Path(out) / "chat_template.jinja").write_text(QWEN_VL_TEMPLATE, encoding="utf-8")
    nbytes = sum(v.nbytes for v in weights.values())
    facts.update(bits=bits, dtype=dtype, weight_gb=round(nbytes / 1e9, 2), seconds=round(time.time() - t0, 1))
    print(json.dumps(facts) + f" -> {out}")
    return facts
