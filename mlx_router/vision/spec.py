"""What the HTTP side knows of a vision model: which families it can serve, the size each image is resized to,
and how many prompt tokens that image becomes. Plain Python from the model folder's JSON files (no mlx, no
mlx-vlm), so prompts are counted, and context limits applied, before the engine does any work.

Qwen2-VL, Qwen2.5-VL and Qwen3-VL cut an image into patches of `patch_size` pixels and merge `merge_size`^2 of
them into one token, after resizing each side to a multiple of `patch_size * merge_size` within the processor's
pixel bounds (`smart_resize` in their image processors). The template writes one `<|image_pad|>` per image; the
processor repeats it once per token. Resizing here, to exactly the size the processor would pick, makes the
engine's processor leave the image as it is, so the two sides cannot disagree on the count.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_router.config.model_files import read_json
from mlx_router.errors import InvalidRequestError

# Qwen-VL model_type -> (default patch size, merge size), when the model's files do not say.
QWEN_GRIDS: dict[str, tuple[int, int]] = {"qwen2_vl": (14, 2), "qwen2_5_vl": (14, 2), "qwen3_vl": (16, 2)}
# Families whose prompt can be prefilled by mlx-vlm and then continued by mlx-lm's text model of the same
# checkpoint (see core/vision_prefill.py).
HANDOVER_FAMILIES = frozenset(QWEN_GRIDS) | {"gemma3"}
# Gemma 3's processor writes each image as text around a fixed number of soft tokens, before tokenizing (the
# newlines merge with the template's in BPE, so the expansion must happen on the text).
GEMMA_BOI, GEMMA_SOFT, GEMMA_EOI = "<start_of_image>", "<image_soft_token>", "<end_of_image>"
MAX_ASPECT_RATIO = 200  # the processors refuse more


@dataclass(frozen=True)
class VisionSpec:
    """One vision model's image geometry and placeholder tokens."""

    family: str
    image_token_id: int
    patch_size: int
    merge_size: int
    min_pixels: int
    max_pixels: int
    tower_heads: int = 16
    tower_width: int = 1280
    fixed: tuple[int, int, int] | None = None  # (width, height, tokens): every image resized to one size (Gemma)
    solo: bool = False  # served by mlx-vlm's own generation: its processor sizes and counts the images
    start_id: int | None = None  # Qwen's <|vision_start|>: the template writes one before each image
    video_id: int | None = None  # a video token: never in a prompt of images

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def target_size(self, width: int, height: int, cap_pixels: int | None = None) -> tuple[int, int]:
        """(width, height) the model sees this image at: the processor's own resize, with the pixel cap
        (`cap_pixels`, a model setting) applied first when it is tighter than the model's own bound."""
        if self.fixed is not None:
            return self.fixed[0], self.fixed[1]
        if self.solo:
            return _within(width, height, cap_pixels)
        if min(width, height) <= 0:
            raise InvalidRequestError("an image has no pixels", param="messages", code="invalid_image")
        if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
            raise InvalidRequestError(
                f"an image of {width}x{height} is too long and thin (aspect ratio over {MAX_ASPECT_RATIO})",
                param="messages",
                code="invalid_image",
            )
        bound = self.max_pixels if cap_pixels is None else max(self.factor**2, min(self.max_pixels, cap_pixels))
        h, w = smart_resize(height, width, self.factor, self.min_pixels, bound)
        # The processor resizes what it is given once more: a size it keeps is what it must be given. A thin
        # image under a small bound is not one after the first pass (its short side is held at one factor).
        for _ in range(64):
            again = smart_resize(h, w, self.factor, self.min_pixels, self.max_pixels)
            again = smart_resize(again[0], again[1], self.factor, self.min_pixels, bound)
            if again == (h, w):
                break
            h, w = again
        return w, h

    def token_count(self, width: int, height: int) -> int:
        """Prompt tokens of an image already at its target size (0: only the engine's processor knows)."""
        if self.fixed is not None:
            return self.fixed[2]
        if self.solo:
            return 0
        return (width // self.factor) * (height // self.factor)

    def encode_bytes(self, width: int, height: int) -> int:
        """Memory the vision tower's activations may take for this image (attention over all its patches, in
        float32, dominates): counted against the memory budget like a KV cache while it is encoded."""
        patches = (width // self.patch_size) * (height // self.patch_size)
        if self.fixed is not None:
            return 4 * patches * (self.tower_heads * patches + 16 * self.tower_width) + 4 * self.fixed[2] * 1024
        return 4 * patches * (self.tower_heads * patches + 16 * self.tower_width)

    def expand_text(self, text: str, counts: Sequence[int]) -> str:
        """The prompt text with each image placeholder written out, for families that expand text (Gemma);
        others are expanded on the ids (`expand`)."""
        if self.fixed is None or self.solo:
            return text
        pieces = text.split(GEMMA_BOI)
        if len(pieces) - 1 != len(counts):
            raise _placeholder_mismatch(len(pieces) - 1, len(counts))
        out = [pieces[0]]
        for count, piece in zip(counts, pieces[1:], strict=True):
            out.append(f"\n\n{GEMMA_BOI}{GEMMA_SOFT * count}{GEMMA_EOI}\n\n{piece}")
        return "".join(out)

    def expand(self, ids: Sequence[int], counts: Sequence[int]) -> list[int]:
        """The prompt with each image's single placeholder repeated once per token of that image (families whose
        text was expanded already are returned as they are)."""
        if self.fixed is not None or self.solo:
            return list(ids)
        places = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(places) != len(counts):
            raise _placeholder_mismatch(len(places), len(counts))
        starts = sum(1 for t in ids if t == self.start_id) if self.start_id is not None else len(counts)
        videos = sum(1 for t in ids if t == self.video_id) if self.video_id is not None else 0
        if starts != len(counts) or videos:
            # a message's text spelling <|vision_start|> or <|video_pad|>: the model would read it as an image
            raise InvalidRequestError(
                "the prompt's vision tokens do not match its images: a message's text holds a vision or video token",
                param="messages",
                code="image_placeholders",
            )
        out: list[int] = []
        last = 0
        for place, count in zip(places, counts, strict=True):
            out.extend(ids[last:place])
            out.extend([self.image_token_id] * count)
            last = place + 1
        out.extend(ids[last:])
        return out


def _within(width: int, height: int, cap: int | None) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, to at most `cap` pixels."""
    if min(width, height) <= 0:
        raise InvalidRequestError("an image has no pixels", param="messages", code="invalid_image")
    if cap is None or width * height <= cap:
        return width, height
    scale = math.sqrt(cap / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _placeholder_mismatch(places: int, images: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"the chat template placed {places} image placeholders for {images} images; "
        "this model's template does not place every image",
        param="messages",
        code="image_placeholders",
    )


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The Qwen-VL image processors' resize: each side a multiple of `factor`, the area within the bounds, the
    aspect ratio kept as well as those allow."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def mlx_vlm_has_family(model_type: str) -> bool:
    """Whether mlx-vlm has a model package for `model_type`, looked up on disk (mlx-vlm is not imported here:
    the HTTP side never imports it)."""
    spec = importlib.util.find_spec("mlx_vlm")
    if spec is None or not spec.submodule_search_locations:
        return False
    name = model_type.lower().replace("-", "_")
    return any((Path(root) / "models" / name / "__init__.py").is_file() for root in spec.submodule_search_locations)


def is_vision_config(config: dict[str, Any]) -> bool:
    """Whether a model's config.json describes a vision-language model (it has a vision tower)."""
    return isinstance(config.get("vision_config"), dict)


def read_vision_spec(path: Path, config: dict[str, Any], solo: bool = False) -> VisionSpec | None:
    """The spec of the vision model in `path`, or None when it is not one this server can serve images to.
    `solo`: a model mlx-vlm serves alone (any family it knows; its processor sizes the images)."""
    family = str(config.get("model_type", ""))
    if not is_vision_config(config):
        return None
    if solo:
        vision = config["vision_config"]
        heads = int(vision.get("num_attention_heads", vision.get("num_heads", 16)))
        width = int(vision.get("hidden_size", vision.get("embed_dim", 1024)))
        patch = int(vision.get("patch_size", 14))
        return VisionSpec(family, -1, patch, 1, 1, 1 << 40, heads, width, solo=True)
    if family not in HANDOVER_FAMILIES:
        return None
    token = config.get("image_token_id", config.get("image_token_index"))
    if not isinstance(token, int):
        return None
    vision = config["vision_config"]
    if family == "gemma3":
        return _gemma_spec(path, config, token, vision)
    patch, merge = QWEN_GRIDS[family]
    patch = int(vision.get("patch_size", patch))
    merge = int(vision.get("spatial_merge_size", merge))
    pre = read_json(path / "preprocessor_config.json")
    size: dict[str, Any] = pre["size"] if isinstance(pre.get("size"), dict) else {}
    min_pixels = int(pre.get("min_pixels") or size.get("shortest_edge") or 56 * 56)
    max_pixels = int(pre.get("max_pixels") or size.get("longest_edge") or 28 * 28 * 1280)
    patch = int(pre.get("patch_size", patch))
    merge = int(pre.get("merge_size", merge))
    heads = int(vision.get("num_heads", 16))
    width = int(vision.get("embed_dim", vision.get("hidden_size", 1280)))
    start, video = config.get("vision_start_token_id"), config.get("video_token_id")
    return VisionSpec(
        family,
        token,
        patch,
        merge,
        min_pixels,
        max_pixels,
        heads,
        width,
        start_id=start if isinstance(start, int) else None,
        video_id=video if isinstance(video, int) else None,
    )


def _gemma_spec(path: Path, config: dict[str, Any], token: int, vision: dict[str, Any]) -> VisionSpec:
    pre = read_json(path / "preprocessor_config.json")
    size = pre["size"] if isinstance(pre.get("size"), dict) else {}
    width, height = int(size.get("width", 896)), int(size.get("height", 896))
    proc = read_json(path / "processor_config.json")
    tokens = int(proc.get("image_seq_length") or pre.get("image_seq_length") or config.get("mm_tokens_per_image", 256))
    patch = int(vision.get("patch_size", 14))
    heads = int(vision.get("num_attention_heads", 16))
    return VisionSpec(
        "gemma3",
        token,
        patch,
        1,
        width * height,
        width * height,
        heads,
        int(vision.get("hidden_size", 1152)),
        fixed=(width, height, tokens),
    )
