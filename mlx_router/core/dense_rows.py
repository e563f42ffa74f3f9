"""How quantized linear layers multiply: one 2-D product, and a dense matmul where that is measured faster.

Two changes to `nn.QuantizedLinear.__call__`, same product up to float rounding:

- **one 2-D product**: the input of a batch of sequences, shape (batch, tokens, features), is flattened to
  (rows, features) first, so the kernel sees every row of a batched decode step as one matrix instead of a
  batch of vectors (timed as if each read the whole weight again; on an H100, 8B 4-bit: batch-8 decode 268 -> 472
  tok/s, batch-64 289 -> 939; bench/RESULTS.md). A single sequence keeps its shape: flattening one decode
  row made MLX pick a slower kernel there (9.3 -> 10.1 ms a token).
- **dense rows**: from `dense_min_rows` rows on (prefill chunks), the weight is dequantized to the activation
  dtype and the dense matmul used, at the cost of one transient dense copy of one layer's weight (on the H100,
  a 270-token prefill of the 8B took 35 ms instead of 54). Whether and from where that pays depends on the
  backend and the model, so `calibrate_dense_rows` times prefills both ways when a model loads
  (`dense_matmul_min_rows: null`, on CUDA only; elsewhere mlx-lm's layers stay as they are unless configured).
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

CALIBRATION_ROWS = (128, 256, 512)
CALIBRATION_MARGIN = 0.9  # with dequantized weights a prefill must take at most 90% of the quantized one's time


class DenseRowsQuantizedLinear(nn.QuantizedLinear):
    """`nn.QuantizedLinear` with a 2-D product, dequantizing its weight from `dense_min_rows` rows on."""

    dense_min_rows: int = 0  # set per layer; 0 never dequantizes

    def __call__(self, x: mx.array) -> mx.array:
        if x.ndim < 2:
            return super().__call__(x)
        lead = x.shape[:-1]
        rows = x.size // x.shape[-1]
        flatten = x.ndim > 2 and rows > x.shape[-2]  # a batch of sequences: one matrix of all their rows
        x2 = x.reshape(rows, x.shape[-1]) if flatten else x
        if self.dense_min_rows and rows >= self.dense_min_rows:
            y = x2 @ dense_weight(self, x.dtype).swapaxes(-1, -2)
            if "bias" in self:
                y = y + self["bias"]
        else:
            y = super().__call__(x2)
        return y.reshape(*lead, y.shape[-1]) if flatten else y


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


def use_dense_rows(model: Any, min_rows: int) -> int:
    """Give the model's affine-quantized linear layers the 2-D product and the dense-rows threshold `min_rows`
    (0: never dequantize), in place. Returns how many layers dequantize for some number of rows."""
    layers = _quantized_layers(model)
    for layer in layers:
        layer.__class__ = DenseRowsQuantizedLinear
        layer.dense_min_rows = min_rows
    return len(layers) if min_rows > 0 else 0


def calibrate_dense_rows(
    model: Any,
    rows: Iterable[int] = CALIBRATION_ROWS,
    timer: Callable[[Callable[[], Any]], float] | None = None,
) -> int:
    """The fewest rows (of those tried) from which a prefill of that many tokens runs faster with dequantized
    weights than with the quantized kernel, and keeps doing so at every larger count tried; 0 if never.

    Whole forward passes are timed, not single products: a lone product finds its weight in the GPU's cache,
    which a forward pass through many layers does not, and timed that way the two ways rank differently.
    """
    from mlx_lm.models.cache import make_prompt_cache

    timer = timer or _median_seconds
    layers = _quantized_layers(model)
    if not layers:
        return 0
    for layer in layers:
        layer.__class__ = DenseRowsQuantizedLinear
    wins = []
    for n in sorted(rows):
        tokens = mx.zeros((1, n), dtype=mx.int32)

        def forward() -> Any:
            return model(tokens, cache=make_prompt_cache(model))  # noqa: B023

        times = {}
        for threshold in (0, n):
            for layer in layers:
                layer.dense_min_rows = threshold
            times[threshold] = timer(forward)
        wins.append((n, times[n] <= CALIBRATION_MARGIN * times[0]))
        logger.debug("prefill of %d tokens: quantized %.1f ms, dense %.1f ms", n, 1000 * times[0], 1000 * times[n])
    for layer in layers:
        layer.dense_min_rows = 0
    threshold = 0
    for n, win in reversed(wins):
        if not win:
            break
        threshold = n
    return threshold


def _median_seconds(fn: Callable[[], Any], runs: int = 3) -> float:
    mx.eval(fn())  # first use compiles kernels
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def dense_rows_setting(configured: int | None) -> int | None:
    """What to apply: the configured threshold; with none configured, None (time it) on CUDA, where both changes
    were measured, and -1 elsewhere: mlx-lm's layers as they are (the CPU's quantized kernel won at every size
    measured; Metal was not measured)."""
    if configured is not None:
        return configured
    return None if mx.cuda.is_available() else -1


def prepare_quantized_layers(model: Any, configured: int | None, timed: dict[str, int], key: str) -> str:
    """Apply the setting to a loaded model; a timed threshold is kept in `timed[key]` for the model's next load.
    Returns a line for the log ("" when nothing changed)."""
    setting = dense_rows_setting(configured)
    if setting is not None and setting < 0:
        return ""
    if setting is None and key in timed:
        setting = timed[key]
    if setting is None:
        t0 = time.perf_counter()
        rows = timed[key] = calibrate_dense_rows(model)
        dense = use_dense_rows(model, rows)
        took = time.perf_counter() - t0
        if not dense:
            return f"quantized layers keep the quantized kernel for prefill (timed in {took:.2f}s)"
        return f"{dense} quantized layers use the dense matmul from {rows} rows on (timed in {took:.2f}s)"
    dense = use_dense_rows(model, setting)
    return f"{dense} quantized layers use the dense matmul from {setting} rows on" if dense else ""
