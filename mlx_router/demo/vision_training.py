"""Teach the vision demo model its colours through mlx-vlm's own forward pass, on what the server will hand it.

Images go through the server's steps (decoded pixels, ``spec.target_size``, the server's resize) and then the
served model's image processor and vision tower (``VisionAdapter.encode``, as the engine calls it). The tower keeps
its random weights and only the language model learns: a random tower already gives each colour its own features.
A solid colour makes every image token the same vector, at any image size (every patch is the same), so a shade's
vector is computed once and a training chat at any grid repeats it; ``check`` chats go through the whole pipeline
from real images, the README's among them, so the shortcut is checked too.

The forward pass is mlx-vlm's Qwen2-VL language model on the prompt's embeddings with the image features in place
of the image tokens (its merge, written as a mask) at its own 3-D "mrope" positions (``get_rope_index``). The
prompt text every chat starts with is computed once per step (``PrefixCache``) and the output head runs only where
an answer token is predicted: on this CPU a step costs what its matrix products cost, and the head over the 4k
vocabulary is the largest of them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from mlx_router.demo.tokenizer import QWEN
from mlx_router.demo.training import PrefixCache
from mlx_router.demo.vision_chats import QUESTIONS, ColourImage, TrainingRow, answer, colour_messages, solid
from mlx_router.engine.params import ImageInput
from mlx_router.vision.adapter import ImageSpan, VisionAdapter
from mlx_router.vision.media import DecodedImage, resize
from mlx_router.vision.spec import VisionSpec


def served_image(image: ColourImage, spec: VisionSpec) -> DecodedImage:
    """The image as the server hands it to the engine: decoded, then resized to the model's size."""
    height, width = image.pixels.shape[:2]
    decoded = DecodedImage.from_rgb(image.pixels.tobytes(), width, height)
    return resize(decoded, *spec.target_size(width, height))


@dataclass(frozen=True)
class Example:
    """One chat as token ids with its image's features."""

    prompt: list[int]  # with the image's tokens written out
    answer: list[int]  # the answer's ids and the end token
    features: mx.array  # (image tokens, hidden)
    grid: list[int]  # (t, h, w) in patches, as the processor reports it


class ChatEncoder:
    """Chats about colour images as the served model sees them (its processor, tower and chat template)."""

    def __init__(self, adapter: VisionAdapter, spec: VisionSpec, tokenizer: Any) -> None:
        self._adapter, self._spec, self._tok = adapter, spec, tokenizer
        self._prompts = {
            q: list(tokenizer.apply_chat_template(colour_messages(q), add_generation_prompt=True, tokenize=True))
            for q in QUESTIONS
        }
        self._end = tokenizer.convert_tokens_to_ids(QWEN.eos[0])
        self._shades: dict[tuple[int, int, int], mx.array] = {}

    def _example(self, question: str, colour: str, features: mx.array, grid: list[int]) -> Example:
        prompt = self._spec.expand(self._prompts[question], [features.shape[0]])
        ids = self._tok.encode(answer(colour), add_special_tokens=False) + [self._end]
        return Example(prompt, ids, features, grid)

    def _encode(self, image: DecodedImage) -> tuple[mx.array, list[int]]:
        item = ImageInput(image.digest, image.width, image.height, image.rgb)
        span = ImageSpan(0, self._spec.token_count(image.width, image.height), item)
        return self._adapter.encode(span).main, self._adapter.grid(item)

    def image(self, image: ColourImage) -> Example:
        """A chat about a real image, through the whole pipeline."""
        features, grid = self._encode(served_image(image, self._spec))
        return self._example(image.question, image.colour, features, grid)

    def row(self, row: TrainingRow) -> Example:
        """A chat about a solid image that the server made ``row.grid``: its shade's one vector, repeated."""
        if row.rgb not in self._shades:
            side = 2 * self._spec.factor  # the smallest image: 2x2 tokens
            features, _ = self._encode(served_image(ColourImage(row.colour, solid(row.rgb, side, side)), self._spec))
            self._shades[row.rgb] = features[0]
        width, height = row.grid
        vector = self._shades[row.rgb]
        features = mx.broadcast_to(vector[None], (width * height, vector.shape[0]))
        merge = self._spec.merge_size
        return self._example(row.question, row.colour, features, [1, height * merge, width * merge])


@dataclass(frozen=True)
class Batch:
    """Chats as one right-padded batch after the prompt text they all start with: ids, mrope positions, image
    features scattered to their places, and which positions predict which answer token."""

    prefix: mx.array  # (1, P)
    ids: mx.array  # (B, L)
    positions: mx.array  # (3, B, L)
    image_mask: mx.array  # (B, L, 1)
    image_embeds: mx.array  # (B, L, hidden): features where image_mask, else 0
    supervised: mx.array  # flat indices into (B * L)
    targets: mx.array


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    n = 0
    while all(len(r) > n + 1 and r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def make_batch(model: nn.Module, examples: Sequence[Example], image_token: int) -> Batch:
    """All ``examples`` as one batch (a step costs its matrix products, not its number of rows)."""
    p = min(_common_prefix([ex.prompt for ex in examples]), min(ex.prompt.index(image_token) for ex in examples))
    width = max(len(ex.prompt) + len(ex.answer) - 1 for ex in examples)
    rows, supervised, targets = [], [], []
    for r, ex in enumerate(examples):
        seq = (ex.prompt + ex.answer)[:-1]
        rows.append(seq + [0] * (width - len(seq)))
        # the last prompt token predicts the first answer token
        supervised += [r * (width - p) + len(ex.prompt) - 1 - p + k for k in range(len(ex.answer))]
        targets += ex.answer
    full = mx.array(rows)
    positions, _ = model.language_model.get_rope_index(full, mx.array([ex.grid for ex in examples]), None, None)
    ids = full[:, p:]
    hidden = examples[0].features.shape[-1]
    scattered = mx.zeros((ids.size, hidden))
    places = [r * (width - p) + i - p for r, row in enumerate(rows) for i, t in enumerate(row) if t == image_token]
    scattered[mx.array(places)] = mx.concatenate([ex.features for ex in examples])
    return Batch(
        full[:1, :p],
        ids,
        positions[:, :, p:],
        (ids == image_token)[..., None],
        scattered.reshape(*ids.shape, hidden),
        mx.array(supervised),
        mx.array(targets),
    )


def batch_loss(model: nn.Module, batch: Batch) -> tuple[mx.array, mx.array]:
    """Mean cross-entropy of the answer tokens, and (no gradient) the smallest margin of a target logit over the
    best other one."""
    lm = model.language_model.model
    caches = [PrefixCache() for _ in lm.layers]
    lm(batch.prefix, cache=caches)  # fills the caches at text positions 0..P-1
    embeds = mx.where(batch.image_mask, batch.image_embeds, lm.embed_tokens(batch.ids))
    out = lm(batch.ids, inputs_embeds=embeds, cache=caches, position_ids=batch.positions)
    logits = lm.embed_tokens.as_linear(out.reshape(-1, out.shape[-1])[batch.supervised])
    loss = nn.losses.cross_entropy(logits, batch.targets).mean()
    target_logit = mx.take_along_axis(logits, batch.targets[:, None], axis=-1)[:, 0]
    is_target = mx.arange(logits.shape[-1])[None, :] == batch.targets[:, None]
    others = mx.where(is_target, mx.array(-mx.inf, logits.dtype), logits)
    return loss, mx.stop_gradient(mx.min(target_logit - others.max(axis=-1)))


def margin(model: nn.Module, batch: Batch) -> float:
    """The smallest margin of an answer token in ``batch`` (teacher forcing): > 0 means greedy decoding says it."""
    return cast(float, batch_loss(model, batch)[1].item())


@dataclass(frozen=True)
class VisionFit:
    """How a training run ended."""

    converged: bool
    steps: int
    seconds: float
    train_margin: float
    check_margin: float


def train_colours(
    model: nn.Module, train: Batch, check: Batch, *, lr: float, min_margin: float, max_seconds: float
) -> VisionFit:
    """Train the language model (the vision tower stays as it is), full batch, until every answer token of the
    training chats *and* of the check's wins by ``min_margin`` logits (or give up after ``max_seconds``)."""
    model.vision_tower.freeze()
    optimizer = optim.Adam(learning_rate=lr)
    loss_and_grad = nn.value_and_grad(model, batch_loss)
    start, step, trained, checked = time.perf_counter(), 0, float("-inf"), float("-inf")
    while time.perf_counter() - start < max_seconds:
        step += 1
        (_, step_margin), grads = loss_and_grad(model, train)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state, step_margin)
        if cast(float, step_margin.item()) < min_margin:
            continue
        # measured before this step's update: confirm on the weights we keep, then on the check's chats
        trained = margin(model, train)
        if trained >= min_margin:
            checked = margin(model, check)
            if checked >= min_margin:
                return VisionFit(True, step, time.perf_counter() - start, trained, checked)
    return VisionFit(False, step, time.perf_counter() - start, trained, checked)
