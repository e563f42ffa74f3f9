"""Sibling projections multiplied as one matrix: an attention's q/k/v, an MLP's gate/up.

A decoder layer multiplies the same input by three attention projections and two MLP projections, each its own
kernel (and, with a bias, its own addition). A small model's decode step is hundreds of such kernels and is bound
by how fast the host launches them, not by the GPU (bench/RESULTS.md, run 4); multiplying by the siblings'
weights stacked into one matrix does the same arithmetic in one kernel and one addition, and the outputs are
views of its result.

The model's own code stays as it is: each sibling becomes a `FusedPart`, and the first one called with an input
computes the stacked product for all of them; the others, called with that same input (the same array object),
take their slice. A part called with another input computes the product itself, so the result is right however
a model calls them, only slower. A model whose output changes (or that fails) after fusing, as a model reading a
projection's weights directly would, is given its layers back at load (`fuse_projections` checks a short
forward pass before and after).
"""

from __future__ import annotations

import logging
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn

logger = logging.getLogger(__name__)

GROUPS: tuple[tuple[str, ...], ...] = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
KEYS = ("weight", "scales", "biases", "bias")  # a linear layer's arrays (quantized: weight, scales, biases)
CHECK_TOKENS = 8
CHECK_TOLERANCE = 1e-2  # largest logit difference allowed, relative to the largest logit


class _Product:
    """One group's stacked layer, and its output for the input it was last called with."""

    __slots__ = ("layer", "sizes", "bounds", "x", "parts", "left")

    def __init__(self, layer: nn.Module, sizes: list[int]) -> None:
        self.layer = layer
        self.sizes = sizes
        self.bounds = [sum(sizes[: i + 1]) for i in range(len(sizes) - 1)]
        self.x: mx.array | None = None
        self.parts: list[mx.array] = []
        self.left = 0


class FusedPart(nn.Module):
    """One sibling of a fused group: its slice of the group's product. The first part holds the stacked layer
    (so its parameters are in the model's tree once)."""

    def __init__(self, product: _Product, index: int) -> None:
        super().__init__()
        self._product = product
        self._index = index
        if index == 0:
            self.stacked = product.layer

    def __call__(self, x: mx.array) -> mx.array:
        p = self._product
        if p.x is not x or p.left == 0:
            p.parts = list(mx.split(p.layer(x), p.bounds, axis=-1))
            p.x, p.left = x, len(p.parts)
        part = p.parts[self._index]
        p.left -= 1
        if p.left == 0:  # every sibling has its slice: hold no activations until the next call
            p.x, p.parts = None, []
        return part


def fuse_projections(model: Any, vocab_size: int) -> int:
    """Fuse every group of sibling projections that can be stacked, in place; returns how many groups were
    fused (0 when the model's output moved and its layers were put back)."""
    probe = mx.arange(CHECK_TOKENS)[None] % max(1, vocab_size)
    before = _logits(model, probe)
    if before is None:
        return 0
    fused: list[tuple[nn.Module, tuple[str, ...], _Product]] = []
    # The parents only: a list of every module would keep each separate layer alive to the end.
    parents = [m for _, m in model.named_modules() if any(names[0] in m for names in GROUPS)]
    for parent in parents:
        for names in GROUPS:
            members = [parent.get(n) for n in names]
            layer = _stacked(members)
            if layer is None:
                continue
            # Evaluated now, and the separate layers dropped: their memory is freed one group at a time.
            mx.eval(layer.parameters())
            product = _Product(layer, [int(m["weight"].shape[0]) for m in members])
            for i, name in enumerate(names):
                setattr(parent, name, FusedPart(product, i))
            fused.append((parent, names, product))
            del members
    if not fused:
        return 0
    after = _logits(model, probe)
    if after is None or _largest(after - before) > CHECK_TOLERANCE * (_largest(before) + 1e-6):
        logger.warning("fusing projections changed this model's output; its layers stay separate")
        for parent, names, product in fused:
            for name, layer in zip(names, _unstacked(product), strict=True):
                setattr(parent, name, layer)
        return 0
    return len(fused)


def _largest(a: mx.array) -> float:
    return float(cast(float, mx.max(mx.abs(a)).item()))


def _logits(model: Any, tokens: mx.array) -> mx.array | None:
    try:
        out = model(tokens).astype(mx.float32)
        mx.eval(out)
        return out
    except Exception:  # a model that cannot run without a cache, or fails once fused
        logger.debug("projection fusion check: the model did not run", exc_info=True)
        return None


def _stacked(members: list[Any]) -> nn.Module | None:
    """The members stacked into one layer of their kind, or None when they cannot be."""
    first = members[0]
    kind = type(first)
    if kind not in (nn.Linear, nn.QuantizedLinear) or any(type(m) is not kind for m in members):
        return None
    for key in KEYS:
        present = [key in m for m in members]
        if any(present) and not all(present):
            return None
        if all(present):
            arrays = [m[key] for m in members]
            if len({a.dtype for a in arrays}) > 1 or len({a.shape[1:] for a in arrays}) > 1:
                return None
    if kind is nn.QuantizedLinear and len({(m.mode, m.bits, m.group_size) for m in members}) > 1:
        return None
    return _layer_like(first, {k: mx.concatenate([m[k] for m in members], axis=0) for k in KEYS if k in first})


def _unstacked(product: _Product) -> list[nn.Module]:
    """The separate layers again, cut from the stacked one's rows."""
    stacked, out, start = product.layer, [], 0
    for size in product.sizes:
        arrays = {k: mx.contiguous(stacked[k][start : start + size]) for k in KEYS if k in stacked}
        out.append(_layer_like(stacked, arrays))
        start += size
    return out


def _layer_like(like: nn.Module, arrays: dict[str, mx.array]) -> nn.Module:
    """A layer of `like`'s kind and quantization holding `arrays`, without initializing weights first."""
    kind = type(like)
    layer: nn.Module = kind.__new__(kind)
    nn.Module.__init__(layer)
    if kind is nn.QuantizedLinear:
        layer.group_size, layer.bits, layer.mode = like.group_size, like.bits, like.mode
        layer.biases = None
    for key, value in arrays.items():
        layer[key] = value
    layer.freeze()
    return layer
