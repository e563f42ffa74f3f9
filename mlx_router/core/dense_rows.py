"""How quantized linear layers multiply: one 2-D product, and a dense matmul where that is measured faster.

Two changes to `nn.QuantizedLinear.__call__`, same product up to float rounding:

- **one 2-D product**: the input of a batch of sequences, shape (batch, tokens, features), is flattened to
  (rows, features) first, so the kernel sees every row as one matrix instead of a batch of vectors. For a
  decode step (one token per sequence) whether that pays depends on the model and the card: on an H100 the
  8B's batch-8 decode went from 268 to 472 tok/s (batch 64: 289 -> 939; bench/RESULTS.md), while on an H200
  the 0.5B decoded 8 and 32 sequences at about half of raw mlx-lm's rate with it. So from how many sequences
  on a decode step is flattened is timed when a model loads on CUDA (`flat_decode_min_batch: null`;
  `calibrate_flat_decode`). A batched prefill (several prompts, many tokens each) is always flattened; a
  single sequence keeps its shape (flattening one decode row made MLX pick a slower kernel: 9.3 -> 10.1 ms).
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
FLAT_DECODE_MARGIN = 0.95  # a flattened decode step must take at most 95% of the batched one's time
FLAT_DECODE_CONTEXT = 64  # tokens each sequence attends to while decode steps are timed
FLAT_DECODE_STEPS = 4  # decode steps per timing, queued one after the other as the batch generator does


class DenseRowsQuantizedLinear(nn.QuantizedLinear):
    """`nn.QuantizedLinear` with a 2-D product, dequantizing its weight from `dense_min_rows` rows on."""

    dense_min_rows: int = 0  # set per layer; 0 never dequantizes
    flat_decode_min_batch: int = 2  # decode steps of this many sequences or more are one matrix; 0: never
    flat_prefill: bool = True  # a batched prefill is one matrix

    def __call__(self, x: mx.array) -> mx.array:
        # Called for every linear layer of every step: few calls into MLX (this is a small model's hot path).
        shape = x.shape
        if len(shape) < 2:
            return super().__call__(x)
        rows = 1
        for n in shape[:-1]:
            rows *= n
        tokens = shape[-2]
        flatten = len(shape) > 2 and rows > tokens and self._flattens(rows, tokens)
        x2 = x.reshape(rows, shape[-1]) if flatten else x
        if self.dense_min_rows and rows >= self.dense_min_rows:
            y = x2 @ dense_weight(self, x.dtype).swapaxes(-1, -2)
            if "bias" in self:
                y = y + self["bias"]
        else:
            y = super().__call__(x2)
        return y.reshape(*shape[:-1], y.shape[-1]) if flatten else y

    def _flattens(self, rows: int, tokens: int) -> bool:
        """A batch of sequences: a prefill if `flat_prefill`, a decode step from `flat_decode_min_batch` on."""
        if tokens > 1:
            return self.flat_prefill
        return 0 < self.flat_decode_min_batch <= rows


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


def _converted_layers(model: Any) -> list[DenseRowsQuantizedLinear]:
    layers = _quantized_layers(model)
    for layer in layers:
        layer.__class__ = DenseRowsQuantizedLinear
    return [layer for layer in layers if isinstance(layer, DenseRowsQuantizedLinear)]


def restore_quantized_layers(model: Any) -> None:
    """Give the layers mlx-lm's own class back."""
    for layer in _quantized_layers(model):
        layer.__class__ = nn.QuantizedLinear


def use_dense_rows(model: Any, min_rows: int, flat_decode_min_batch: int = 2, flat_prefill: bool = True) -> int:
    """Give the model's affine-quantized linear layers the 2-D product (decode steps from
    `flat_decode_min_batch` sequences on, 0: never; batched prefills if `flat_prefill`) and the dense-rows
    threshold `min_rows` (0: never dequantize), in place. Returns how many layers dequantize for some number
    of rows."""
    layers = _converted_layers(model)
    for layer in layers:
        layer.dense_min_rows = min_rows
        layer.flat_decode_min_batch = flat_decode_min_batch
        layer.flat_prefill = flat_prefill
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
    layers = _converted_layers(model)
    if not layers:
        return 0
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
    return _fewest_that_keep_winning(wins)


def calibrate_flat_decode(
    model: Any,
    sizes: Iterable[int],
    timer: Callable[[Callable[[], Any]], float] | None = None,
) -> int:
    """The fewest sequences (of the batch sizes tried) from which a decode step runs faster with the batch
    multiplied as one matrix than as a batch of vectors, and keeps doing so at every larger size tried; 0 if
    never. Each timing queues a few decode steps one after the other, as the batch generator does, so the
    Python that builds a step overlaps the kernels of the one before it."""
    from mlx_lm.models.cache import make_prompt_cache

    timer = timer or _median_seconds
    layers = _converted_layers(model)
    if not layers:
        return 0
    kept = layers[0].flat_decode_min_batch
    wins = []
    readings = []
    for b in sorted(sizes):
        cache = make_prompt_cache(model)
        mx.eval(model(mx.zeros((b, FLAT_DECODE_CONTEXT), dtype=mx.int32), cache=cache))
        first = mx.zeros((b, 1), dtype=mx.int32)

        def decode() -> Any:
            return _decode_steps(model, cache, first, FLAT_DECODE_STEPS)  # noqa: B023

        times = {}
        for setting in (b, 0):  # flattened, then a batch of vectors
            for layer in layers:
                layer.flat_decode_min_batch = setting
            times[setting] = timer(decode)
        wins.append((b, times[b] <= FLAT_DECODE_MARGIN * times[0]))
        readings.append(f"{b}: {1000 * times[b] / FLAT_DECODE_STEPS:.2f}/{1000 * times[0] / FLAT_DECODE_STEPS:.2f}")
    logger.info("decode step ms, one matrix/batched, by batch size: %s", ", ".join(readings))
    for layer in layers:
        layer.flat_decode_min_batch = kept
    return _fewest_that_keep_winning(wins)


def calibrate_flat_prefill(
    model: Any,
    batch: int,
    tokens: int = 256,
    timer: Callable[[Callable[[], Any]], float] | None = None,
) -> bool:
    """Whether a prefill of `batch` prompts runs faster with the batch multiplied as one matrix (kept unless
    the batched product is clearly faster)."""
    from mlx_lm.models.cache import make_prompt_cache

    timer = timer or _median_seconds
    layers = _converted_layers(model)
    if not layers or batch < 2:
        return True
    kept = layers[0].flat_prefill
    prompts = mx.zeros((batch, tokens), dtype=mx.int32)

    def forward() -> Any:
        return model(prompts, cache=make_prompt_cache(model))

    times = {}
    for flat in (True, False):
        for layer in layers:
            layer.flat_prefill = flat
        times[flat] = timer(forward)
    for layer in layers:
        layer.flat_prefill = kept
    logger.info(
        "prefill of %d x %d tokens: one matrix %.1f ms, batched %.1f ms",
        batch,
        tokens,
        *(1000 * times[f] for f in (True, False)),
    )
    return not times[False] <= FLAT_DECODE_MARGIN * times[True]


def flat_decode_sizes(max_batch: int) -> list[int]:
    """The batch sizes timed: 2, 4, 8, ... and `max_batch` itself."""
    sizes = [b for b in (2**i for i in range(1, 12)) if b < max_batch]
    return sizes + [max_batch] if max_batch > 1 else []


def _decode_steps(model: Any, cache: list[Any], first: mx.array, n: int) -> mx.array:
    y = first
    for _ in range(n):
        logits = model(y, cache=cache)[:, -1, :]
        y = mx.argmax(logits, axis=-1, keepdims=True).astype(mx.int32)
        mx.async_eval(y)
    return y


def _fewest_that_keep_winning(wins: list[tuple[int, bool]]) -> int:
    threshold = 0
    for n, win in sorted(wins, reverse=True):
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


def flat_decode_setting(configured: int | None) -> int | None:
    """The configured batch size; with none configured, None (time it) on CUDA and 0 (never) elsewhere."""
    if configured is not None:
        return configured
    return None if mx.cuda.is_available() else 0


def prepare_quantized_layers(
    model: Any,
    dense_configured: int | None,
    timed: dict[str, int],
    key: str,
    flat_configured: int | None = 0,
    max_batch: int = 1,
) -> str:
    """Apply both settings to a loaded model; what was timed is kept in `timed` (under `key`) for the model's
    next load. Returns a line for the log ("" when nothing changed)."""
    dense = dense_rows_setting(dense_configured)
    flat = flat_decode_setting(flat_configured)
    if dense is not None and dense < 0 and flat == 0:
        return ""  # mlx-lm's layers as they are
    t0 = time.perf_counter()
    ran = False
    flat_prefill = True
    dense_key, flat_key, prefill_key = f"{key} dense", f"{key} flat {max_batch}", f"{key} flat prefill"
    if dense is None:
        ran = ran or dense_key not in timed
        dense = timed[dense_key] = timed[dense_key] if dense_key in timed else calibrate_dense_rows(model)
    if flat is None:
        # timed with the prefill setting in place; a batched prefill's shape is timed alongside
        use_dense_rows(model, max(dense, 0))
        ran = ran or flat_key not in timed
        flat = timed[flat_key] if flat_key in timed else calibrate_flat_decode(model, flat_decode_sizes(max_batch))
        timed[flat_key] = flat
        if prefill_key not in timed:
            timed[prefill_key] = int(calibrate_flat_prefill(model, min(8, max_batch)))
        flat_prefill = bool(timed[prefill_key])
    layers = len(_converted_layers(model))
    timing = f" (timed in {time.perf_counter() - t0:.2f}s)" if ran else ""
    if dense <= 0 and flat == 0 and not flat_prefill:
        restore_quantized_layers(model)  # nothing to change: mlx-lm's layers, without a wrapper's cost a call
        return f"{layers} quantized layers stay as mlx-lm has them{timing}"
    use_dense_rows(model, max(dense, 0), flat, flat_prefill)
    prefill = f"the dense matmul from {dense} rows on" if dense > 0 else "the quantized kernel for prefill"
    decode = f"decode batches of {flat} or more as one matrix" if flat > 0 else "decode batches as a batch of vectors"
    batched = "" if flat_prefill else ", batched prefills as a batch of matrices"
    return f"{layers} quantized layers use {prefill}, {decode}{batched}{timing}"
