"""MLX backend switches that are read from the environment, set before the worker first uses MLX.

Both matter only on CUDA (MLX's Metal and CPU backends ignore them), and a variable the user already set wins:

- `MLX_CUDA_USE_CUDNN_SDPA`: cuDNN's fused attention builds an execution plan for every new query/key shape,
  tens of milliseconds each (bench/HISTORY.md). A server sees a new prompt length in nearly every request, so
  that cost lands in most times to first token; MLX's own kernels need no per-shape build. The setting
  `defaults.cudnn_attention` chooses.
- `MLX_PTX_CACHE_DIR`: MLX compiles CUDA kernels at run time (seconds for each new batch shape) and caches
  them under the system's temporary folder, which is often cleared at reboot; a cache under the user's cache
  folder lets a restarted server skip those compiles.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from importlib import metadata
from pathlib import Path


def configure_backend(cudnn_attention: bool, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the variables the user has not set; returns what was set."""
    env = os.environ if environ is None else environ
    wanted = {
        "MLX_CUDA_USE_CUDNN_SDPA": "1" if cudnn_attention else "0",
        "MLX_PTX_CACHE_DIR": str(_kernel_cache_dir(env)),
    }
    applied = {k: v for k, v in wanted.items() if k not in env}
    env.update(applied)
    return applied


def _kernel_cache_dir(env: MutableMapping[str, str]) -> Path:
    # the installed version, read without importing MLX (this runs in the HTTP process)
    try:
        mlx_version = metadata.version("mlx")
    except metadata.PackageNotFoundError:
        mlx_version = "unknown"
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mlx-router" / "cuda-kernels" / f"mlx-{mlx_version}"
