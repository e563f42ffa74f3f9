import mlx.core as mx
import mlx.nn as nn
import pytest

from mlx_router.core.dense_rows import (
    DenseRowsQuantizedLinear,
    calibrate_dense_rows,
    calibrate_flat_decode,
    calibrate_flat_prefill,
    dense_rows_setting,
    flat_decode_sizes,
    prepare_quantized_layers,
    use_dense_rows,
)


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(128, 256, bias=True)
        self.b = nn.Linear(256, 128, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.b(self.a(x))


@pytest.fixture
def model() -> TwoLayers:
    mx.random.seed(3)
    m = TwoLayers()
    nn.quantize(m, group_size=64, bits=4)
    mx.eval(m.parameters())
    return m


def test_the_2d_product_and_the_dense_path_give_the_quantized_result(model):
    x = mx.random.normal((3, 5, 128))
    expected = model(x)
    assert use_dense_rows(model, 0) == 0
    assert isinstance(model.a, DenseRowsQuantizedLinear)
    assert mx.allclose(model(x), expected, atol=1e-5).item()  # flattened to 15 rows, quantized kernel
    assert use_dense_rows(model, 8) == 2
    assert mx.allclose(model(x), expected, atol=1e-4).item()  # 15 rows >= 8: dequantized weight
    assert model(x[:1, :2]).shape == (1, 2, 128)  # 2 rows: quantized kernel again
    assert mx.allclose(model(x[0]), expected[0], atol=1e-4).item()  # 2-D input


def flattened_inputs(layer: DenseRowsQuantizedLinear, x: mx.array) -> list[tuple[int, ...]]:
    """The shapes the quantized kernel was handed for `x`."""
    seen: list[tuple[int, ...]] = []
    original = nn.QuantizedLinear.__call__

    def spy(self, inp):
        seen.append(tuple(inp.shape))
        return original(self, inp)

    nn.QuantizedLinear.__call__ = spy
    try:
        mx.eval(layer(x))
    finally:
        nn.QuantizedLinear.__call__ = original
    return seen


def test_decode_steps_are_one_matrix_from_the_configured_batch_size_on(model):
    use_dense_rows(model, 0, flat_decode_min_batch=8)
    layer = model.a
    assert flattened_inputs(layer, mx.zeros((4, 1, 128))) == [(4, 1, 128)]  # a decode step of 4: batched
    assert flattened_inputs(layer, mx.zeros((8, 1, 128))) == [(8, 128)]  # of 8: one matrix
    assert flattened_inputs(layer, mx.zeros((2, 5, 128))) == [(10, 128)]  # a batched prefill: always
    assert flattened_inputs(layer, mx.zeros((1, 1, 128))) == [(1, 1, 128)]  # one sequence keeps its shape
    use_dense_rows(model, 0, flat_decode_min_batch=0)
    assert flattened_inputs(layer, mx.zeros((64, 1, 128))) == [(64, 1, 128)]  # never
    x = mx.random.normal((8, 1, 128))
    batched = model(x)
    use_dense_rows(model, 0, flat_decode_min_batch=2)
    assert mx.allclose(model(x), batched, atol=1e-5).item()  # the same product either way


class FakeLM(nn.Module):
    """Enough of an mlx-lm model for calibration: layers, a cache, a forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(128, 128)
        self.layers = [TwoLayers()]
        nn.quantize(self.layers[0], group_size=64, bits=4)

    def __call__(self, tokens: mx.array, cache=None) -> mx.array:
        return self.layers[0](self.embed(tokens))

    def make_cache(self):
        return []


def timed_by(dense_faster_at):
    """A timer that reports the dense way faster exactly at the row counts given."""

    def timer(model):
        def time_it(fn):
            mx.eval(fn())  # the forward pass really runs
            threshold = model.layers[0].a.dense_min_rows
            return 0.5 if threshold and threshold in dense_faster_at else 1.0

        return time_it

    return timer


@pytest.mark.parametrize(
    "dense_faster_at, expected",
    [({128, 512}, 128), ({512}, 512), ({128}, 0), (set(), 0)],
)
def test_calibration_picks_the_fewest_rows_from_which_dense_keeps_winning(dense_faster_at, expected):
    model = FakeLM()
    assert calibrate_dense_rows(model, rows=(128, 512), timer=timed_by(dense_faster_at)(model)) == expected
    assert model.layers[0].a.dense_min_rows == 0  # calibration leaves the layers as it found them


def flat_faster_from(batch: int):
    """A timer that reports the one-matrix decode faster for batches of `batch` sequences or more."""

    def timer(model):
        def time_it(fn):
            mx.eval(fn())  # the decode steps really run
            setting = model.layers[0].a.flat_decode_min_batch
            return 0.5 if setting and setting >= batch else 1.0

        return time_it

    return timer


@pytest.mark.parametrize("faster_from, expected", [(2, 2), (8, 8), (64, 64), (1000, 0)])
def test_flat_decode_calibration_picks_the_fewest_sequences_from_which_one_matrix_keeps_winning(faster_from, expected):
    model = FakeLM()
    sizes = flat_decode_sizes(64)
    assert sizes == [2, 4, 8, 16, 32, 64]
    assert calibrate_flat_decode(model, sizes, timer=flat_faster_from(faster_from)(model)) == expected
    assert model.layers[0].a.flat_decode_min_batch == 2  # left as it was found


@pytest.mark.parametrize("batched_time, expected", [(0.5, False), (0.97, True), (2.0, True)])
def test_a_batched_prefill_stays_one_matrix_unless_the_batch_of_matrices_is_clearly_faster(batched_time, expected):
    model = FakeLM()

    def timer(fn):
        mx.eval(fn())
        return 1.0 if model.layers[0].a.flat_prefill else batched_time

    assert calibrate_flat_prefill(model, 8, tokens=16, timer=timer) is expected
    assert model.layers[0].a.flat_prefill  # left as it was found
    use_dense_rows(model, 0, flat_prefill=False)
    assert flattened_inputs(model.layers[0].a, mx.zeros((2, 5, 128))) == [(2, 5, 128)]


def test_flat_decode_sizes_end_at_the_largest_batch():
    assert flat_decode_sizes(1) == []
    assert flat_decode_sizes(2) == [2]
    assert flat_decode_sizes(24) == [2, 4, 8, 16, 24]


def test_without_cuda_the_layers_stay_mlx_lms_unless_configured():
    model = FakeLM()
    assert dense_rows_setting(None) == -1  # the test machine has no GPU
    assert prepare_quantized_layers(model, None, {}, "m", flat_configured=None) == ""
    assert type(model.layers[0].a) is nn.QuantizedLinear
    assert dense_rows_setting(32) == 32
    assert prepare_quantized_layers(model, 32, {}, "m", flat_configured=None) == (
        "2 quantized layers use the dense matmul from 32 rows on, decode batches as a batch of vectors"
    )
    assert model.layers[0].a.dense_min_rows == 32
    assert model.layers[0].a.flat_decode_min_batch == 0
    assert prepare_quantized_layers(FakeLM(), None, {}, "m", flat_configured=4) == (
        "2 quantized layers use the quantized kernel for prefill, decode batches of 4 or more as one matrix"
    )


def test_timed_thresholds_are_reused_at_the_next_load(monkeypatch):
    import mlx_router.core.dense_rows as dense_rows

    monkeypatch.setattr(dense_rows, "dense_rows_setting", lambda configured: None)  # as on CUDA
    monkeypatch.setattr(dense_rows, "flat_decode_setting", lambda configured: None)
    calls = []
    monkeypatch.setattr(dense_rows, "calibrate_dense_rows", lambda model: calls.append(("dense", model)) or 256)
    monkeypatch.setattr(dense_rows, "calibrate_flat_decode", lambda model, sizes: calls.append(("flat", sizes)) or 16)
    monkeypatch.setattr(dense_rows, "calibrate_flat_prefill", lambda model, n: bool(calls.append(("prefill", n))))
    timed: dict[str, int] = {}
    first, second = FakeLM(), FakeLM()
    line = prepare_quantized_layers(first, None, timed, "/models/m", flat_configured=None, max_batch=32)
    chosen = (
        "2 quantized layers use the dense matmul from 256 rows on, decode batches of 16 or more as one matrix, "
        "batched prefills as a batch of matrices"
    )
    assert line.startswith(chosen + " (timed")
    assert prepare_quantized_layers(second, None, timed, "/models/m", flat_configured=None, max_batch=32) == chosen
    assert calls == [("dense", first), ("flat", [2, 4, 8, 16, 32]), ("prefill", 8)]
    assert timed == {"/models/m dense": 256, "/models/m flat 32": 16, "/models/m flat prefill": 0}
    layer = second.layers[0].b
    assert layer.dense_min_rows == 256 and layer.flat_decode_min_batch == 16 and not layer.flat_prefill


def test_layers_stay_mlx_lms_when_the_timings_find_nothing_faster(monkeypatch):
    import mlx_router.core.dense_rows as dense_rows

    monkeypatch.setattr(dense_rows, "dense_rows_setting", lambda configured: None)  # as on CUDA
    monkeypatch.setattr(dense_rows, "flat_decode_setting", lambda configured: None)
    monkeypatch.setattr(dense_rows, "calibrate_dense_rows", lambda model: 0)
    monkeypatch.setattr(dense_rows, "calibrate_flat_decode", lambda model, sizes: 0)
    monkeypatch.setattr(dense_rows, "calibrate_flat_prefill", lambda model, n: False)
    model = FakeLM()
    line = prepare_quantized_layers(model, None, {}, "m", flat_configured=None, max_batch=8)
    assert line.startswith("2 quantized layers stay as mlx-lm has them (timed in")
    assert type(model.layers[0].a) is nn.QuantizedLinear and type(model.layers[0].b) is nn.QuantizedLinear
