import mlx.core as mx
import mlx.nn as nn
import pytest

from mlx_router.core.dense_rows import (
    DenseRowsQuantizedLinear,
    calibrate_dense_rows,
    dense_rows_setting,
    use_dense_rows,
    weight_key,
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


def test_per_shape_thresholds(model):
    assert use_dense_rows(model, {weight_key(model.a): 64}) == 1
    assert model.a.dense_min_rows == 64 and model.b.dense_min_rows == 0


def test_calibration_picks_the_smallest_winning_suffix(model):
    dense_wins = {256: {64, 256}, 128: {16, 256}}  # layer a from 64 rows on; layer b wins at 16, loses at 64
    seen: dict[tuple[int, ...], int] = {}

    def timer(fn):
        rows, out = fn().shape
        n = seen[(rows, out)] = seen.get((rows, out), 0) + 1  # the quantized product is timed first
        dense = n == 2
        return (0.5 if rows in dense_wins[out] else 2.0) if dense else 1.0

    chosen = calibrate_dense_rows(model, rows=(16, 64, 256), timer=timer)
    assert chosen == {weight_key(model.a): 64, weight_key(model.b): 256}


def test_calibration_leaves_out_shapes_where_dense_never_wins(model):
    chosen = calibrate_dense_rows(model, rows=(16, 64), timer=lambda fn: (fn(), 1.0)[1])
    assert chosen == {}  # equal times: the dense matmul must be clearly faster


def test_calibration_runs_both_products_for_real(model):
    seen = []

    def timer(fn):
        out = fn()
        mx.eval(out)
        seen.append(out.shape)
        return 1.0

    calibrate_dense_rows(model, rows=(16,), timer=timer)
    assert sorted(seen) == [(16, 128), (16, 128), (16, 256), (16, 256)]


def test_the_cpu_keeps_the_quantized_kernel_unless_configured():
    assert dense_rows_setting(None) == 0  # the test machine has no GPU
    assert dense_rows_setting(32) == 32
