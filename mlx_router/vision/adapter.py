"""mlx-vlm's half of a vision model, on the engine's MLX thread: the vision tower, image features (cached by
content), multimodal positions and the embeddings a prompt with images is prefilled from.

A vision model is loaded twice over the same weight arrays: mlx-vlm's model (vision tower and its language
model, which takes embeddings and Qwen's 3-D "mrope" positions) prefills the prompt up to its last image, and
mlx-lm's text class of the same checkpoint continues it in the shared continuous batch. For text after the
images the three mrope position components are equal, so mlx-lm's 1-D RoPE gives the same result at position
`cache index + delta`, where delta (<= 0) is how many positions the images saved; the batch shifts the row's
RoPE offset by it (`core/vision_prefill.py`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlx_router.engine.params import ImageInput
from mlx_router.errors import InvalidRequestError, ModelLoadError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSpan:
    """Where one image's tokens sit in a prompt."""

    start: int
    end: int
    image: ImageInput


@dataclass(frozen=True)
class Features:
    """What the vision tower makes of one image: a row per image token, and (Qwen3-VL) the "deepstack"
    features the language model adds to its first layers' hidden states at the image's positions."""

    main: mx.array
    deepstack: tuple[mx.array, ...] = ()

    @property
    def nbytes(self) -> int:
        return int(self.main.nbytes + sum(d.nbytes for d in self.deepstack))


class FeatureCache:
    """Vision-tower outputs by image digest, least recently used out, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._items: OrderedDict[str, Features] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, digest: str) -> Features | None:
        item = self._items.get(digest)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(digest)
        return item

    def put(self, digest: str, features: Features) -> None:
        if features.nbytes > self._max or digest in self._items:
            return
        self._items[digest] = features
        self.nbytes += features.nbytes
        while self.nbytes > self._max:
            _, old = self._items.popitem(last=False)
            self.nbytes -= old.nbytes

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


class VisionAdapter:
    """The vision tower and multimodal prefill of one loaded model (MLX thread only)."""

    def __init__(self, vlm: Any, image_processor: Any, config: dict[str, Any], feature_cache_bytes: int) -> None:
        self.vlm = vlm
        self._processor = image_processor
        self.image_token_id = int(config.get("image_token_id", config.get("image_token_index", -1)))
        self._family = str(config.get("model_type", ""))
        params: list[Any] = [item[1] for item in tree_flatten(vlm.vision_tower.parameters())]
        floats = [p for p in params if mx.issubdtype(p.dtype, mx.floating)]
        self._tower_dtype = floats[0].dtype if floats else mx.float32  # pixels go in as the tower's weights are
        self.features = FeatureCache(feature_cache_bytes)

    # -- images --------------------------------------------------------------------------------------------
    def spans(self, prompt: Sequence[int], images: Sequence[ImageInput]) -> list[ImageSpan]:
        """Each image's run of image tokens, in order; a prompt whose runs do not match its images is refused."""
        runs: list[tuple[int, int]] = []
        i, n = 0, len(prompt)
        while i < n:
            if prompt[i] == self.image_token_id:
                j = i
                while j < n and prompt[j] == self.image_token_id:
                    j += 1
                runs.append((i, j))
                i = j
            else:
                i += 1
        if len(runs) != len(images):
            raise InvalidRequestError(f"the prompt holds {len(runs)} images' tokens for {len(images)} images")
        return [ImageSpan(s, e, img) for (s, e), img in zip(runs, images, strict=True)]

    def encode(self, span: ImageSpan) -> Features:
        """The image's features (one row per token), from the cache or the vision tower."""
        image = span.image
        cached = self.features.get(image.digest)
        if cached is not None and cached.main.shape[0] == span.end - span.start:
            return cached
        pixels, grid = self._pixels(image)
        tower = self.vlm.vision_tower
        dtype = self._tower_dtype
        if self._family == "qwen3_vl":
            main, deepstack = tower(mx.array(pixels).astype(dtype), mx.array(grid))
            features = Features(main, tuple(deepstack))
        elif self._family == "gemma3":
            # the projector's output, scaled down as mlx-vlm's merge does (its language model scales all
            # input embeddings up by the same factor)
            hidden = tower(mx.array(pixels).transpose(0, 2, 3, 1).astype(dtype), output_hidden_states=True)[0]
            scale = float(self.vlm.config.hidden_size) ** 0.5  # mlx-vlm divides by the top-level size
            features = Features(self.vlm.multi_modal_projector(hidden)[0] / scale)
        else:
            features = Features(tower(mx.array(pixels).astype(dtype), mx.array(grid), output_hidden_states=False))
        mx.eval(features.main, *features.deepstack)
        if features.main.shape[0] != span.end - span.start:
            raise InvalidRequestError(
                f"an image of {image.width}x{image.height} gave {features.main.shape[0]} features for "
                f"{span.end - span.start} tokens"
            )
        self.features.put(image.digest, features)
        return features

    def grid(self, image: ImageInput) -> list[int]:
        """The image's (t, h, w) patch grid: the image is already at a size the processor keeps."""
        patch = int(self.vlm.config.vision_config.patch_size)
        return [1, image.height // patch, image.width // patch]

    def _pixels(self, image: ImageInput) -> tuple[np.ndarray, list[list[int]]]:
        from PIL import Image

        picture = Image.frombytes("RGB", (image.width, image.height), image.rgb)
        out = self._processor(images=[picture], return_tensors="np")
        grid = np.asarray(out["image_grid_thw"]).astype(np.int64).tolist() if "image_grid_thw" in out else []
        return np.asarray(out["pixel_values"]), grid

    # -- prompts -------------------------------------------------------------------------------------------
    def positions(self, prompt: Sequence[int], spans: Sequence[ImageSpan]) -> tuple[mx.array | None, int]:
        """The prompt's mrope position ids (3, 1, L) and the RoPE shift of the text after its last image (none
        and 0 for families whose images take one position per token)."""
        if self._family == "gemma3":
            return None, 0
        grids = mx.array([self.grid(s.image) for s in spans])
        ids = mx.array([list(prompt)])
        try:
            position_ids, deltas = self.vlm.language_model.get_rope_index(ids, grids, None, None)
            shift: Any = mx.array(deltas).reshape(-1)[0].item()
        except Exception as e:  # e.g. a message's text spelling vision or video tokens the images do not match
            raise InvalidRequestError(
                f"the prompt's vision tokens do not match its {len(spans)} images ({type(e).__name__})",
                param="messages",
            ) from None
        return position_ids, int(shift)

    def embeddings(
        self, prompt: Sequence[int], start: int, end: int, spans: Sequence[ImageSpan], features: dict[int, Features]
    ) -> mx.array:
        """Input embeddings of prompt[start:end] (1, n, hidden), image features (by span start, from `encode`)
        in place of image tokens."""
        embed = self.vlm.language_model.model.embed_tokens(mx.array([list(prompt[start:end])]))
        for span, lo, hi in _overlaps(spans, start, end):
            found = features.get(span.start)
            if found is None:
                found = features[span.start] = self.encode(span)
            embed[0, lo - start : hi - start] = found.main[lo - span.start : hi - span.start].astype(embed.dtype)
        return embed

    def prefill(
        self,
        prompt: Sequence[int],
        start: int,
        end: int,
        embeds: mx.array,
        cache: list[Any],
        position_ids: mx.array | None,
        spans: Sequence[ImageSpan],
        features: dict[int, Features],
    ) -> None:
        """Run prompt[start:end] through mlx-vlm's language model into `cache` (its lm-head output is never
        evaluated); Qwen3-VL's deepstack features go in beside, cut to the chunk."""
        kwargs: dict[str, Any] = {}
        inside = list(_overlaps(spans, start, end))
        layers = max((len(features[s.start].deepstack) for s, _, _ in inside if s.start in features), default=0)
        if layers:
            mask = mx.array([[t == self.image_token_id for t in prompt[start:end]]])
            kwargs["visual_pos_masks"] = mask
            kwargs["deepstack_visual_embeds"] = [
                mx.concatenate([features[s.start].deepstack[k][lo - s.start : hi - s.start] for s, lo, hi in inside])
                for k in range(layers)
            ]
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        ids = mx.array([list(prompt[start:end])])
        self.vlm.language_model(ids, inputs_embeds=embeds, cache=cache, **kwargs)
        mx.eval([c.state for c in cache])

    def close(self) -> None:
        self.features.clear()


def _overlaps(spans: Sequence[ImageSpan], start: int, end: int) -> list[tuple[ImageSpan, int, int]]:
    """The images with tokens in prompt[start:end], each with the part of it there."""
    return [(s, max(s.start, start), min(s.end, end)) for s in spans if s.end > start and s.start < end]


def load_vision(path: Path, feature_cache_bytes: int) -> tuple[VisionAdapter, Any, dict[str, Any]]:
    """mlx-vlm's model of `path` and mlx-lm's text model of the same checkpoint over the same arrays.

    Returns (adapter, text model, config). The text model is built lazily from the files and then handed the
    vision model's evaluated arrays, so no weight is read or held twice.
    """
    from mlx_lm.utils import load_model as load_text_model
    from mlx_vlm.utils import load_image_processor, load_processor
    from mlx_vlm.utils import load_model as load_vlm_model

    try:
        vlm = load_vlm_model(path, lazy=False)
        processor = load_image_processor(path) or getattr(load_processor(path, True), "image_processor", None)
        text_model, config = load_text_model(path, lazy=True)
    except Exception as e:
        raise ModelLoadError(f"{path.name}: the vision model could not be loaded ({e})") from None
    if processor is None:
        raise ModelLoadError(f"{path.name}: no image processor (preprocessor_config.json)")
    ours: dict[str, Any] = dict(tree_flatten(vlm.parameters()))
    text_keys = [item[0] for item in tree_flatten(text_model.parameters())]
    missing = [k for k in text_keys if k not in ours]
    if missing:
        raise ModelLoadError(f"{path.name}: the text model's weights {missing[:3]} are not in the vision model")
    text_model.update(tree_unflatten([(k, ours[k]) for k in text_keys]))
    return VisionAdapter(vlm, processor, config, feature_cache_bytes), text_model, config
