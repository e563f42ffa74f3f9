"""Quantized layers that switch to dequantize-then-dense-matmul for inputs of many rows.

A prefill chunk or a decode step of a large batch multiplies many rows by each weight. On some backends MLX's
quantized matmul kernel is slow for many rows (bench/qmm_paths.py measures it per shape); there, expanding the
weight to the activation dtype and using the dense matmul is faster, at the cost of one transient dense copy of
one layer's weight. `use_dense_rows(model, min_rows)` makes every quantized linear layer of a loaded model do
that for inputs of at least `min_rows` rows; fewer rows (single-stream decode) keep the quantized kernel.
The result is the same product up to float rounding.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn


class DenseRowsQuantizedLinear(nn.QuantizedLinear):
    """`nn.QuantizedLinear` that dequantizes its weight for inputs of `dense_min_rows` rows or more."""

    dense_min_rows: int = 0  # set per layer by `use_dense_rows`; 0 never switches

    def __call__(self, x: mx.array) -> mx.array:
        rows = x.size // x.shape[-1] if x.ndim else 0
        if not self.dense_min_rows or rows < self.dense_min_rows or self.mode != "affine":
            return super().__call__(x)
        weight = mx.dequantize(
            self["weight"],
            self["scales"],
            self.get("biases"),
            group_size=self.group_size,
            bits=self.bits,
            mode=self.mode,
            dtype=x.dtype,
        )
        y = x @ weight.T
        if "bias" in self:
            y = y + self["bias"]
        return y


# Where dequantize-then-matmul beats MLX's quantized kernel, by backend (bench/RESULTS.md). On the CPU the
# quantized kernel won at every size measured (1, 8 and 64 rows); Metal was not measured, so both keep it.
CUDA_DENSE_MIN_ROWS = 16


def dense_min_rows(configured: int | None) -> int:
    """The configured row threshold, or the backend's measured default when the config says null."""
    if configured is not None:
        return configured
    return CUDA_DENSE_MIN_ROWS if mx.cuda.is_available() else 0


def use_dense_rows(model: Any, min_rows: int) -> int:
    """Switch the model's affine-quantized linear layers (in place); returns how many were switched.

    `min_rows` <= 0 switches them back to the plain quantized kernel.
    """
    switched = 0
    for _, module in model.named_modules():
        if type(module) in (nn.QuantizedLinear, DenseRowsQuantizedLinear) and module.mode == "affine":
            if min_rows > 0:
                module.__class__ = DenseRowsQuantizedLinear
                module.dense_min_rows = min_rows
                switched += 1
            else:
                module.__class__ = nn.QuantizedLinear
    return switched
