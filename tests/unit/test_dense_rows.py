import mlx.core as mx
import mlx.nn as nn
import pytest

from mlx_router.core.dense_rows import (
    DenseRowsQuantizedLinear,
    calibrate_dense_rows,
    dense_rows_setting,
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


class FakeLM(nn.Module):
    """Enough of an mlx-lm model for calibration: layers, a cache, a forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(32, 128)
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


def test_without_cuda_the_layers_stay_mlx_lms_unless_configured():
    model = FakeLM()
    assert dense_rows_setting(None) == -1  # the test machine has no GPU
    assert prepare_quantized_layers(model, None, {}, "m") == ""
    assert type(model.layers[0].a) is nn.QuantizedLinear
    assert dense_rows_setting(32) == 32
    assert prepare_quantized_layers(model, 32, {}, "m") == "2 quantized layers use the dense matmul from 32 rows on"
    assert model.layers[0].a.dense_min_rows == 32


def test_a_timed_threshold_is_reused_at_the_next_load(monkeypatch):
    import mlx_router.core.dense_rows as dense_rows

    monkeypatch.setattr(dense_rows, "dense_rows_setting", lambda configured: None)  # as on CUDA
    calls = []
    monkeypatch.setattr(dense_rows, "calibrate_dense_rows", lambda model: calls.append(model) or 256)
    timed: dict[str, int] = {}
    first, second = FakeLM(), FakeLM()
    assert "from 256 rows on (timed" in prepare_quantized_layers(first, None, timed, "/models/m")
    assert prepare_quantized_layers(second, None, timed, "/models/m") == (
        "2 quantized layers use the dense matmul from 256 rows on"
    )
    assert calls == [first] and timed == {"/models/m": 256}
    assert second.layers[0].b.dense_min_rows == 256
