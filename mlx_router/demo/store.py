"""Where the demo models are kept, and building them there once.

The text demo lives in ``<cache>/demo/mlx-router-demo`` and the vision demo beside it in
``<cache>/demo/mlx-router-demo-vision`` (``<cache>`` is ``$MLX_ROUTER_CACHE``, else ``~/.cache/mlx-router``), so
each folder's name is the model id the server lists. A marker file in each records which definition it was built
from (a version, the chats or colours, the template, the recipe; the vision demo's also the text demo's, whose
tokenizer it shares): a newer definition rebuilds it, and an up-to-date one is returned at once, without importing
mlx.

Builds are atomic and happen once: a process takes an exclusive lock on ``<cache>/demo/.lock``, builds in a
hidden temporary folder beside the final one (the server's model discovery skips hidden names) and renames
it into place when it is complete. A second process waits for the lock and then finds the model built.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlx_router.demo.chats import DEMO_MODEL_ID, demo_chats
from mlx_router.demo.tokenizer import QWEN
from mlx_router.demo.vision_chats import VISION_MODEL_ID, vision_data

logger = logging.getLogger(__name__)

CACHE_ENV = "MLX_ROUTER_CACHE"
# Bump when the build changes in a way the definition digest cannot see (say, the trainer's code).
DEMO_VERSION = 1
MARKER_FILE = "mlx_router_demo.json"
BUILD_SECONDS_ESTIMATE = 10  # what the progress line announces (8 s on 2 quiet CPU cores, 15 on busy ones)
VISION_VERSION = 1
VISION_BUILD_SECONDS_ESTIMATE = 6  # 5-6 s on 2 quiet CPU cores


@dataclass(frozen=True)
class DemoRecipe:
    """The knobs of a demo build (part of the definition that decides whether a kept build is current)."""

    vocab: int = 4000
    hidden: int = 64
    layers: int = 2
    seed: int = 0
    lr: float = 3e-3
    min_margin: float = 2.0  # trained margin: greedy decoding stays exact after saving and reloading
    sharp_margin: float = 24.0  # after sharpening: 4k * e^-24 = 2e-7 chance of another token at T=1
    # the context the server allows (config.json's max_position_embeddings): clients such as OpenWebUI send
    # ~9,300 tokens of built-in tools with every chat; RoPE has no table, so it costs nothing until used
    context: int = 32768


@dataclass(frozen=True)
class VisionRecipe:
    """The knobs of a vision demo build (part of its definition)."""

    hidden: int = 32
    layers: int = 2
    vision_width: int = 32
    max_pixels: int = 84 * 84  # every image becomes 4 to 9 tokens
    seed: int = 0
    lr: float = 3e-3
    min_margin: float = 2.0  # trained margin, on the training chats and on the check's unseen images
    sharp_margin: float = 24.0
    context: int = 32768  # as the text demo's


def default_cache_dir() -> Path:
    """``$MLX_ROUTER_CACHE``, else ``~/.cache/mlx-router``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mlx-router").expanduser()


def demo_model_dir(cache_dir: Path | None = None) -> Path:
    """Where the demo model is (or will be) kept: ``<cache>/demo/mlx-router-demo``."""
    return Path(cache_dir or default_cache_dir()) / "demo" / DEMO_MODEL_ID


def vision_model_dir(cache_dir: Path | None = None) -> Path:
    """Where the vision demo model is (or will be) kept: ``<cache>/demo/mlx-router-demo-vision``."""
    return Path(cache_dir or default_cache_dir()) / "demo" / VISION_MODEL_ID


def demo_definition() -> dict[str, Any]:
    """What a demo build depends on, as a version and a digest of the chats, template and recipe."""
    h = hashlib.sha256()
    h.update(json.dumps([asdict(c) for c in demo_chats()], sort_keys=True).encode())
    h.update(QWEN.template_path.read_bytes())
    h.update(json.dumps(asdict(DemoRecipe()), sort_keys=True).encode())
    return {"model": DEMO_MODEL_ID, "version": DEMO_VERSION, "digest": h.hexdigest()[:16]}


def vision_definition() -> dict[str, Any]:
    """What a vision demo build depends on: its version, questions, colours, sizes and recipe, and the text demo's
    definition (its tokenizer)."""
    h = hashlib.sha256()
    h.update(json.dumps([demo_definition(), vision_data(), asdict(VisionRecipe())], sort_keys=True).encode())
    return {"model": VISION_MODEL_ID, "version": VISION_VERSION, "digest": h.hexdigest()[:16]}


def read_marker(model_dir: Path) -> dict[str, Any]:
    """The marker a demo build left in ``model_dir`` (empty if none or unreadable)."""
    try:
        marker = json.loads((Path(model_dir) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _is_current(model_dir: Path, definition: dict[str, Any]) -> bool:
    marker = read_marker(model_dir)
    return all(marker.get(k) == v for k, v in definition.items())


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``, saying so when another process holds it and we wait."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is building the demo model; waiting for it...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_demo_model(cache_dir: Path | None = None) -> Path:
    """The demo model's folder, built first if it is missing or from an older definition.

    ``cache_dir`` replaces the cache root (``$MLX_ROUTER_CACHE`` or ``~/.cache/mlx-router``). The folder's
    parent can be added to the server's model dirs: the folder's name, ``mlx-router-demo``, is the model id.
    """
    return _ensure(demo_model_dir(cache_dir), demo_definition(), _build_text_demo, BUILD_SECONDS_ESTIMATE)


def ensure_demo_vision_model(cache_dir: Path | None = None) -> Path:
    """The vision demo model's folder (``mlx-router-demo-vision``, beside the text demo's), built first if it is
    missing or from an older definition; the text demo, whose tokenizer it uses, is ensured first."""
    text = ensure_demo_model(cache_dir)

    def build(out: Path) -> dict[str, Any]:
        from mlx_router.demo.vision_build import build_vision_demo_model  # imports mlx: only when needed

        return build_vision_demo_model(out, text)

    return _ensure(vision_model_dir(cache_dir), vision_definition(), build, VISION_BUILD_SECONDS_ESTIMATE)


def _build_text_demo(out: Path) -> dict[str, Any]:
    from mlx_router.demo.build import build_demo_model  # imports mlx: only when a build is needed

    return build_demo_model(out)


def _ensure(final: Path, definition: dict[str, Any], build: Callable[[Path], dict[str, Any]], estimate_s: int) -> Path:
    if _is_current(final, definition):
        return final
    with _locked(final.parent / ".lock"):
        if _is_current(final, definition):  # another process built it while we waited
            return final
        for stale in final.parent.glob(".build-*"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        _build_into_place(final, definition, build, estimate_s)
    return final


def _build_into_place(
    final: Path, definition: dict[str, Any], build: Callable[[Path], dict[str, Any]], estimate_s: int
) -> None:
    """Build in a hidden folder beside ``final``, then swap it in (the old build, if any, goes away)."""
    logger.info("building the demo model %r in %s (first start only, ~%d s)...", final.name, final, estimate_s)
    tmp = final.parent / f".build-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    old = final.parent / f".build-old-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    try:
        facts = build(tmp)
        marker = {**definition, **facts, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("demo model ready in %.1f s: %s", time.perf_counter() - start, final)
