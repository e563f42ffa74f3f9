"""Quantized matmul against dequantize-then-matmul, per number of rows, on one model's weight shapes.

usage: qmm_paths.py [--shape 8b|0.5b] [--rows 1,2,4,8,16,32,64,128,270,512] [--bits 4]
A prefill of N tokens or a decode step of a batch of N multiplies N rows by every weight. If MLX's quantized
kernel is slow for many rows, dequantizing the weight and using the dense matmul may win from some N on; this
prints both per shape and N (ms per call, median of 5 runs of 10 calls, after warm-up) and where they cross.
Read it with care: a lone product finds its weight in the GPU's cache, so on the H100 it ranked the two ways
unlike whole forward passes did (bench/RESULTS.md); attention_paths.py times the model itself.
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx

SHAPES = {
    "8b": [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336)],
    "0.5b": [(896, 896), (128, 896), (4864, 896), (896, 4864)],
}


def per_call_ms(fn, calls: int = 10) -> float:
    mx.eval([fn() for _ in range(2)])  # first-use compiles
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        mx.eval([fn() for _ in range(calls)])
        runs.append((time.perf_counter() - t0) * 1000 / calls)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="8b")
    ap.add_argument("--rows", default="1,2,4,8,16,32,64,128,270,512")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--dtype", default="float16")
    a = ap.parse_args()
    dtype = getattr(mx, a.dtype)
    for out_dims, in_dims in SHAPES[a.shape]:
        w = (mx.random.normal((out_dims, in_dims)) * 0.02).astype(dtype)
        wq, scales, biases = mx.quantize(w, group_size=64, bits=a.bits)
        mx.eval(wq, scales, biases)

        def dq():
            return mx.dequantize(wq, scales, biases, group_size=64, bits=a.bits)

        dq_ms = per_call_ms(dq)
        for n in [int(r) for r in a.rows.split(",")]:
            x = (mx.random.normal((n, in_dims)) * 0.5).astype(dtype)
            mx.eval(x)
            q_ms = per_call_ms(lambda: mx.quantized_matmul(x, wq, scales, biases, True, 64, a.bits))  # noqa: B023
            d_ms = per_call_ms(lambda: x @ dq().T)  # noqa: B023
            print(
                f"QMM shape={out_dims}x{in_dims} rows={n} quantized_ms={q_ms:.3f} dequant_matmul_ms={d_ms:.3f} "
                f"dequant_alone_ms={dq_ms:.3f} winner={'dequant' if d_ms < q_ms else 'quantized'}",
                flush=True,
            )


if __name__ == "__main__":
    main()
