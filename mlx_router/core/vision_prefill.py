"""A prompt with images, prefilled by mlx-vlm up to its last image and then handed to the shared batch.

The worker runs one unit of it per iteration (one image through the vision tower, or one chunk of
`prefill_step_size` tokens), between the batch's decode steps, so running streams keep flowing while an image
is read. What follows the last image is text: the batch prefills and decodes it with mlx-lm's text model, its
RoPE offset shifted by the images' position saving (see `vision/adapter.py`); `ShiftingBatchGenerator` applies
that shift when the request joins the batch, and mlx-lm's batch cache keeps it per row from then on (its
`offset` feeds RoPE only; masks use its own index and padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator

from mlx_router.core.solo import BatchHandover
from mlx_router.vision.adapter import Features, ImageSpan, VisionAdapter

ROPE_SHIFT = "rope_shift"  # attribute of a request's first layer cache: its RoPE offset shift in the batch


def image_keys(prompt: Sequence[int], spans: Sequence[ImageSpan]) -> list[int]:
    """The prompt as the prefix cache keys it: each image's tokens replaced by an id derived from its content
    (negative, so no text token is ever equal to one), so a cached prefix holding one image never serves a
    prompt with another image in its place."""
    keys = list(prompt)
    for span in spans:
        key = -(1 + int(span.image.digest[:15], 16))
        keys[span.start : span.end] = [key] * (span.end - span.start)
    return keys


def cut_to_image_start(cached: int, spans: Sequence[ImageSpan]) -> int:
    """A prefix hit of `cached` tokens, cut back so it never ends inside an image."""
    for span in spans:
        if span.start < cached < span.end:
            return span.start
    return cached


class VisionSequence:
    """Encodes a request's images and prefills its prompt through its last image, one unit per `step`."""

    def __init__(
        self,
        uid: int,
        adapter: VisionAdapter,
        prompt: list[int],
        spans: list[ImageSpan],
        cache: list[Any],
        cached: int,
        chunk: int,
        max_tokens: int,
    ) -> None:
        self.uid = uid
        self._adapter = adapter
        self._prompt = prompt
        self._spans = spans
        self._cache = cache
        self._done = cached
        self._end = max(cached, spans[-1].end if spans else 0)
        self._chunk = chunk
        self._max_tokens = max_tokens
        self._to_encode = [s for s in spans if s.end > cached]
        self._features: dict[int, Features] = {}  # by span start: held while this prompt is read
        self._positions: mx.array | None = None
        self._placed = False  # positions computed (none for families without mrope)
        self._shift = 0
        self.fresh = True

    @property
    def prefilled(self) -> bool:
        """Every image is in the cache: the rest is text for the batch."""
        return self._placed and self._done >= self._end

    def cache_nbytes(self) -> int:
        return int(sum(c.nbytes for c in self._cache))

    def step(self) -> None:
        """One image through the vision tower, or one chunk of the prompt through the language model."""
        self.fresh = False
        if not self._placed:
            self._positions, self._shift = self._adapter.positions(self._prompt, self._spans)
            self._placed = True
            return
        if self._to_encode:
            span = self._to_encode.pop(0)
            self._features[span.start] = self._adapter.encode(span)
            return
        if self._done < self._end:
            n = min(self._chunk, self._end - self._done)
            lo, hi = self._done, self._done + n
            embeds = self._adapter.embeddings(self._prompt, lo, hi, self._spans, self._features)
            self._adapter.prefill(
                self._prompt, lo, hi, embeds, self._cache, self._positions, self._spans, self._features
            )
            self._done = hi

    def handover(self) -> BatchHandover:
        """The text after the last image, for the batch, with the cache's RoPE shift attached."""
        setattr(self._cache[0], ROPE_SHIFT, self._shift)
        self._features.clear()
        cache, self._cache = self._cache, []  # the batch merges a copy: holding this one would keep it twice
        rest = self._prompt[self._done :]
        return BatchHandover(rest, cache, list(self._prompt[: self._done]), self._max_tokens)


class ShiftingBatchGenerator(BatchGenerator):
    """mlx-lm's BatchGenerator, with a per-request RoPE shift applied as requests join the batch.

    Overrides `_make_batch` of mlx-lm 0.32 (pinned): it pops the next prompts' entries (uid, segments, max
    tokens, caches, ...) and merges their caches into the batch's; the merge sets each row's offset from its
    length, so the shift is added to the merged offsets right after."""

    def _make_batch(self, n: int) -> Any:
        shifts = [int(getattr(entry[3][0], ROPE_SHIFT, 0)) for entry in list(self._unprocessed_sequences)[:n]]
        batch = super()._make_batch(n)
        if any(shifts):
            delta = mx.array(shifts)
            for c in batch.prompt_cache:
                c.offset = c.offset + delta
        return batch
