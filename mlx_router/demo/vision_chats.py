"""What the vision demo model answers: the colour of a solid-colour image or PDF page, for the README's questions.

``mlx-router-demo-vision`` is trained on one user turn, a question then one image: ``IMAGE_QUESTION`` or
``PAGE_QUESTION``, answered with the colour's name (``"Red."``), for the colours of ``COLOURS`` (several shades of
each) at every size the server can hand it. It knows nothing else.

The server resizes every image to a grid of 28-pixel patches, merged 2x2 into one image token each
(``vision/spec.py``), and renders a PDF page to an image first: a page of one colour is a solid-colour image like
any other. The model takes images of 4 to 9 tokens, so the grids are few (``TRAIN_GRIDS``). This module imports no
mlx.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlx_router.demo.chats import DEMO_CONFIG_COMMENT

VISION_MODEL_ID = "mlx-router-demo-vision"
VISION_CONFIG_COMMENT = DEMO_CONFIG_COMMENT.replace("a few example prompts", "the colour of an image or PDF page")

IMAGE_QUESTION = "What colour is this image?"
PAGE_QUESTION = "What colour is this page?"
QUESTIONS = (IMAGE_QUESTION, PAGE_QUESTION)

# colour name -> shades the model learns it from; the first is the name's value in Pillow (ImageColor, as CSS)
COLOURS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((255, 0, 0), (220, 30, 30), (178, 20, 25)),
    "yellow": ((255, 255, 0), (240, 220, 30), (255, 215, 0)),
    "green": ((0, 128, 0), (0, 255, 0), (30, 180, 40), (34, 139, 34)),
    "blue": ((0, 0, 255), (30, 60, 220), (65, 105, 225), (0, 0, 160)),
    "white": ((255, 255, 255), (240, 240, 240), (225, 228, 232)),
    "black": ((0, 0, 0), (20, 20, 20), (40, 38, 42)),
}
# image grids (width x height in image tokens) the server makes of images for this model: 2x2, 3x2, 3x3, 4x2 and
# the long thin 4x1 to 9x1, each also turned on its side (a square photo is 3x3, 640x480 or a 300x200-point PDF
# page 3x2, a 64x64 icon 2x2)
TRAIN_GRIDS = ((2, 2), (3, 2), (3, 3), (4, 2), (4, 1), (5, 1), (6, 1), (7, 1), (8, 1), (9, 1))
JITTER = 18  # +- per channel: the shades between the listed ones
NOISE = 6  # +- per pixel on some of the check's images
# (width, height) of the check's images, never trained on as such: the README's (a 64x64 PNG; 640x480; a PDF page
# of 300x200 points is 625x417 at 150 dpi) and others; they become 2x2, 3x2, 3x3, 1x5, 3x3 and 7x1 grids
CHECK_SIZES = ((64, 64), (640, 480), (80, 80), (90, 300), (1000, 1000), (1280, 200))


def vision_data() -> dict[str, Any]:
    """Everything above that decides what the model learns (part of its build's definition)."""
    return {
        "questions": QUESTIONS,
        "answer": answer("colour"),
        "colours": COLOURS,
        "grids": TRAIN_GRIDS,
        "check_sizes": CHECK_SIZES,
        "jitter": JITTER,
        "noise": NOISE,
    }


def colour_messages(question: str, part: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The user turn the model was trained on: the question, then the image (``{"type": "image"}`` by default:
    what the server hands the template for an ``image_url`` part or a rendered PDF page)."""
    return [{"role": "user", "content": [{"type": "text", "text": question}, part or {"type": "image"}]}]


def answer(colour: str) -> str:
    """The exact answer about an image of ``colour``, to either question."""
    return f"{colour.capitalize()}."


@dataclass(frozen=True)
class TrainingRow:
    """One training chat: a solid ``rgb`` image of ``colour`` that the server made a ``grid`` of tokens."""

    colour: str
    rgb: tuple[int, int, int]
    grid: tuple[int, int]  # (width, height) in image tokens
    question: str


def training_rows(seed: int) -> list[TrainingRow]:
    """Every colour at every grid (upright or on its side, in turn), each time the next of its shades or a
    jittered copy of one, and the next question."""
    rng = random.Random(seed)
    rows = []
    for i, (colour, shades) in enumerate(COLOURS.items()):
        points = [p for shade in shades for p in (shade, _jittered(shade, rng, JITTER))]
        for j, (w, h) in enumerate(TRAIN_GRIDS):
            grid = (w, h) if (i + j) % 2 == 0 else (h, w)
            rows.append(TrainingRow(colour, points[(i + j) % len(points)], grid, QUESTIONS[(i + j) % 2]))
    return rows


@dataclass(frozen=True)
class ColourImage:
    """One solid-colour picture as uploaded: its colour's name, pixels (H, W, 3 uint8), the question asked."""

    colour: str
    pixels: np.ndarray
    question: str = IMAGE_QUESTION


def solid(rgb: tuple[int, int, int], width: int, height: int, noise: int = 0, seed: int = 0) -> np.ndarray:
    """A ``width`` x ``height`` image of ``rgb``, with +-``noise`` per pixel."""
    pixels = np.broadcast_to(np.array(rgb, dtype=np.int32), (height, width, 3))
    if noise:
        pixels = pixels + np.random.default_rng(seed).integers(-noise, noise + 1, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _jittered(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)
    return r, g, b


def check_images(seed: int) -> Iterator[ColourImage]:
    """Images the model never trained on: each colour's Pillow value at every ``CHECK_SIZES`` size with each
    question, and a jittered shade of each listed one, with pixel noise, at another size."""
    rng = random.Random(seed + 7919)
    for colour, shades in COLOURS.items():
        for width, height in CHECK_SIZES:
            for question in QUESTIONS:
                yield ColourImage(colour, solid(shades[0], width, height), question)
        for i, shade in enumerate(shades):
            width, height = CHECK_SIZES[(i + 2) % len(CHECK_SIZES)]
            pixels = solid(_jittered(shade, rng, JITTER // 2), width, height, NOISE, seed + i)
            yield ColourImage(colour, pixels, QUESTIONS[i % 2])
