"""The HTTP side's image sizes and token counts (vision/spec.py) against the models' own processors: the size an
image is resized to is one the processor keeps, so both sides count the same tokens."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlx_router.vision.spec import read_vision_spec, smart_resize

SIZES = [(1, 1), (45, 45), (100, 60), (140, 100), (640, 480), (1000, 60), (2000, 100), (60, 1000), (4000, 3000)]
CAPS = [None, 84 * 84, 112 * 112, 200 * 200]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_target_sizes_are_kept_by_the_processor_and_within_the_cap(
    family: str, tiny_vlm_dir: Callable[[str], Path]
) -> None:
    from mlx_vlm.utils import load_image_processor, load_processor

    path = tiny_vlm_dir(family)
    spec = read_vision_spec(path, json.loads((path / "config.json").read_text()))
    assert spec is not None
    processor = load_image_processor(path) or load_processor(path, True).image_processor  # as the engine does
    for width, height in SIZES:
        for cap in CAPS:
            w, h = spec.target_size(width, height, cap)
            assert smart_resize(h, w, spec.factor, spec.min_pixels, spec.max_pixels) == (h, w), (width, height, cap)
            if cap is not None:
                assert w * h <= max(cap, spec.factor**2, spec.min_pixels), (width, height, cap)
            picture = Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8))
            grid = np.asarray(processor(images=[picture], return_tensors="np")["image_grid_thw"])[0]
            tokens = int(grid[1] * grid[2]) // spec.merge_size**2
            assert tokens == spec.token_count(w, h), (width, height, cap)


def test_a_thin_image_under_a_small_cap_is_not_resized_twice() -> None:
    # 1000x60 under 84x84 pixels: one pass of the resize gives 336x28 (the short side held at one factor, over
    # the bound); the processor would shrink that again to 252x28 and count 9 tokens, not 12
    first = smart_resize(60, 1000, 28, 56 * 56, 84 * 84)
    assert first == (28, 336)
    assert smart_resize(*first, 28, 56 * 56, 84 * 84) != first
