"""How quantized linear layers multiply: one 2-D product, and a dense matmul where that is measured faster.

Two changes to `nn.QuantizedLinear.__call__`, same product up to float rounding:

- **one 2-D product**: an input of shape (batch, tokens, features) is flattened to (rows, features) first, so
  the kernel sees every row of a batched decode step as one matrix instead of a batch of vectors (each of which
  may read the whole weight again);
- **dense rows**: from `dense_min_rows` rows on (prefill chunks, large batches), the weight is dequantized to
  the activation dtype and the dense matmul used, at the cost of one transient dense copy of one layer's
  weight. Whether and from where that pays depends on the backend and the weight's shape, so
  `calibrate_dense_rows` times both ways per weight shape when a model loads (`dense_matmul_min_rows: null`).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import mlx.core as mx
import mlx.nn as nn

logger = logging.getLogger(__name__)

CALIBRATION_ROWS = (16, 64, 256)
CALIBRATION_MARGIN = 0.9  # the dense matmul must take at most 90% of the quantized kernel's time


class DenseRowsQuantizedLinear(nn.QuantizedLinear):
    """`nn.QuantizedLinear` with a 2-D product, dequantizing its weight from `dense_min_rows` rows on."""

    dense_min_rows: int = 0  # set per layer; 0 never dequantizes

    def __call__(self, x: mx.array) -> mx.array:
        if x.ndim < 2:
            return super().__call__(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x
        if self.dense_min_rows and x2.shape[0] >= self.dense_min_rows:
            y = x2 @ dense_weight(self, x.dtype).T
            if "bias" in self:
                y = y + self["bias"]
        else:
            y = super().__call__(x2)
        return y.reshape(*lead, y.shape[-1]) if x.ndim > 2 else y


def dense_weight(layer: nn.QuantizedLinear, dtype: mx.Dtype) -> mx.array:
    """The layer's weight, dequantized to `dtype` (shape: output x input)."""
    return mx.dequantize(
        layer["weight"],
        layer["scales"],
        layer.get("biases"),
        group_size=layer.group_size,
        bits=layer.bits,
        mode=layer.mode,
        dtype=dtype,
    )


def _quantized_layers(model: Any) -> list[nn.QuantizedLinear]:
    return [
        m
        for _, m in model.named_modules()
        if type(m) in (nn.QuantizedLinear, DenseRowsQuantizedLinear) and m.mode == "affine"
    ]


def use_dense_rows(model: Any, min_rows: int | dict[tuple[int, ...], int]) -> int:
    """Give the model's affine-quantized linear layers the 2-D product and a dense-rows threshold (in place).

    `min_rows` is one threshold for every layer, or one per weight key (`weight_key`); 0 never dequantizes.
    Returns how many layers dequantize for some number of rows.
    """
    dense = 0
    for layer in _quantized_layers(model):
        layer.__class__ = DenseRowsQuantizedLinear
        rows = min_rows if isinstance(min_rows, int) else min_rows.get(weight_key(layer), 0)
        layer.dense_min_rows = rows
        dense += rows > 0
    return dense


def weight_key(layer: nn.QuantizedLinear) -> tuple[int, ...]:
    out_dims, packed = layer["weight"].shape
    return (out_dims, packed, layer.group_size, layer.bits)


def calibrate_dense_rows(
    model: Any,
    rows: Iterable[int] = CALIBRATION_ROWS,
    timer: Callable[[Callable[[], mx.array]], float] | None = None,
) -> dict[tuple[int, ...], int]:
    """Per weight shape: the fewest rows from which the dense matmul beats the quantized kernel (and keeps
    beating it at every larger count measured); shapes where it never does are left out."""
    timer = timer or _median_seconds
    dtype = _activation_dtype(model)
    chosen: dict[tuple[int, ...], int] = {}
    layers: dict[tuple[int, ...], nn.QuantizedLinear] = {}
    for layer in _quantized_layers(model):
        layers.setdefault(weight_key(layer), layer)
    for key, layer in layers.items():
        in_dims = layer["weight"].shape[1] * 32 // layer.bits
        wins = []
        for n in sorted(rows):
            x = mx.zeros((n, in_dims), dtype=dtype)
            quantized = timer(lambda: _quantized(layer, x))  # noqa: B023
            dense = timer(lambda: x @ dense_weight(layer, dtype).T)  # noqa: B023
            wins.append((n, dense <= CALIBRATION_MARGIN * quantized))
        threshold = 0
        for n, win in reversed(wins):
            if not win:
                break
            threshold = n
        if threshold:
            chosen[key] = threshold
    logger.debug("dense matmul from these rows on, per weight shape: %s", chosen)
    return chosen


def _quantized(layer: nn.QuantizedLinear, x: mx.array) -> mx.array:
    return mx.quantized_matmul(
        x,
        layer["weight"],
        scales=layer["scales"],
        biases=layer.get("biases"),
        transpose=True,
        group_size=layer.group_size,
        bits=layer.bits,
        mode=layer.mode,
    )


def _median_seconds(fn: Callable[[], mx.array], calls: int = 4, runs: int = 3) -> float:
    mx.eval(fn())  # first use compiles kernels
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        mx.eval([fn() for _ in range(calls)])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _activation_dtype(model: Any) -> mx.Dtype:
    from mlx.utils import tree_flatten

    for item in tree_flatten(model.parameters()):
        p = item[1]
        if isinstance(p, mx.array) and mx.issubdtype(p.dtype, mx.floating) and p.ndim == 1:
            return p.dtype  # norms keep the activation dtype
    return mx.float16


def dense_rows_setting(configured: int | None) -> int | None:
    """The threshold to apply: the configured one, or None to calibrate (GPU backends) / 0 (the CPU, whose
    quantized kernel won at every size measured)."""
    if configured is not None:
        return configured
    return None if (mx.cuda.is_available() or mx.metal.is_available()) else 0


def prepare_quantized_layers(model: Any, configured: int | None) -> str:
    """Apply the setting to a loaded model; returns a line for the log."""
    setting = dense_rows_setting(configured)
    if setting is None:
        t0 = time.perf_counter()
        per_shape = calibrate_dense_rows(model)
        dense = use_dense_rows(model, per_shape)
        took = time.perf_counter() - t0
        return f"{dense} quantized layers use the dense matmul for many rows (calibrated in {took:.2f}s: {per_shape})"
    dense = use_dense_rows(model, setting)
    return f"{dense} quantized layers use the dense matmul from {setting} rows on" if dense else ""
