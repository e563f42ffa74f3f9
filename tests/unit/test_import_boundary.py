"""The HTTP process imports no MLX: the app and every module it is built from load without mlx, mlx-lm or
mlx-vlm, and without the engine's own modules (`mlx_router/core/`), which run only in the engine process."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import mlx_router

# Where MLX may be imported: the engine itself, the vision adapter it loads, and the demo's offline builders.
ENGINE_SIDE = ("mlx_router.core", "mlx_router.vision.adapter", "mlx_router.demo.build", "mlx_router.demo.training")
ENGINE_SIDE += ("mlx_router.demo.vision_build", "mlx_router.demo.vision_training")
FORBIDDEN = ("mlx", "mlx_lm", "mlx_vlm", "mlx_router.core")


def _http_side_modules() -> list[str]:
    root = Path(mlx_router.__file__).parent
    names = [m.name for m in pkgutil.walk_packages([str(root)], prefix="mlx_router.")]
    return sorted(n for n in names if not n.startswith(ENGINE_SIDE) and n != "mlx_router.__main__")


def _loaded_after(imports: list[str]) -> list[str]:
    code = (
        "import importlib, sys\n"
        f"for name in {imports!r}: importlib.import_module(name)\n"
        f"print('\\n'.join(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN[:3]!r} "
        f"or m == {FORBIDDEN[3]!r} or m.startswith({FORBIDDEN[3] + '.'!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.split()


def test_the_app_imports_no_mlx() -> None:
    assert _loaded_after(["mlx_router.app", "mlx_router.cli", "mlx_router.server"]) == []


def test_no_http_side_module_imports_mlx() -> None:
    modules = _http_side_modules()
    assert "mlx_router.engine.client" in modules and "mlx_router.serving.chat" in modules
    assert _loaded_after(modules) == []


def test_the_check_sees_an_mlx_import() -> None:
    """The probe itself: importing an engine module is caught."""
    assert "mlx" in _loaded_after(["mlx_router.core.sampling"])
