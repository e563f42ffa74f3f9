#!/usr/bin/env bash
# On the offline GPU host, from the repo root: put the carried wheels together and install them into /tmp/site.
# The first half of mlx-cuda-13 was copied to /tmp/w by an earlier call (a call carries at most 64 MiB).
set -euo pipefail
W=/tmp/w
mkdir -p "$W" /tmp/site
cp .whl/*.whl "$W"/
[ -f .whl/cuda13.part.ab ] && cp .whl/cuda13.part.ab "$W"/
cat "$W"/cuda13.part.aa "$W"/cuda13.part.ab > "$W"/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl
python3 -m pip install -q --no-deps --target /tmp/site "$W"/*.whl
PYTHONPATH=/tmp/site:$PWD python3 -c "import mlx.core as mx, mlx_lm, mlx_router; print(mx.default_device(), mx.device_info())"
