"""What the model tools share: the server's config, its model folders, and the models it would serve.

The tools must see what the server sees. The server scans `defaults.model_directory` (MLX_MODEL_DIR and
--model-dir override it) and the Hugging Face caches; when that finds nothing it serves the built-in demo
models from their cache folder (`mlx_router/startup.py`). `served_models` follows the same steps, without
building anything.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from mlx_router.config.discovery import ModelDiscovery, ModelEntry, default_hf_cache_dirs
from mlx_router.config.settings import Settings, load_settings

DEFAULT_CONFIG = "config.json"
FALLBACK_MODEL_DIR = "~/models"  # where new models go when no model folder is configured (config.json's example)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and --model-dir, with the meaning the server gives them."""
    parser.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        help=f"the server's config file (default: ./{DEFAULT_CONFIG} when it exists, else built-in defaults)",
    )
    parser.add_argument(
        "--model-dir",
        metavar="DIR",
        help=f"model folder (default: the config's defaults.model_directory, MLX_MODEL_DIR, else {FALLBACK_MODEL_DIR})",
    )


def load_tool_settings(config: str | None) -> Settings:
    """The server's settings from `config`, ./config.json when that exists, else the defaults.

    Raises mlx_router.config.settings.ConfigError for a missing or invalid file that was named.
    """
    if config is None and os.path.isfile(DEFAULT_CONFIG):
        config = DEFAULT_CONFIG
    return load_settings(config)


def config_path(config: str | None) -> Path:
    """The config file a tool writes to: `config`, else ./config.json."""
    return Path(config or DEFAULT_CONFIG).expanduser()


def model_dir(settings: Settings, override: str | None) -> Path:
    """The folder models are installed into: --model-dir, else the server's own, else ~/models."""
    if override:
        return Path(override).expanduser()
    configured = settings.defaults.model_directory  # load_settings already applied MLX_MODEL_DIR
    return Path(configured or FALLBACK_MODEL_DIR).expanduser()


def discovery(settings: Settings, folder: Path, hf_cache: bool) -> ModelDiscovery:
    """Model discovery over `folder` (and the Hugging Face caches when `hf_cache`), as the server does it."""
    hf_dirs = default_hf_cache_dirs() if hf_cache and settings.defaults.scan_hf_cache else []
    return ModelDiscovery([folder], hf_dirs)


@dataclass(frozen=True)
class ServedModels:
    """The models a server with these settings serves, and where they come from."""

    entries: dict[str, ModelEntry]
    model_dirs: list[Path]  # the model folders scanned (not the hub caches)
    hf_cache: bool  # whether the Hugging Face caches were scanned
    demo: bool  # nothing else was found: these are the built-in demo models
    demo_dir: Path  # where the demo models are (or would be built)
    skipped: dict[str, str] = field(default_factory=dict)  # id -> why its folder is not served (discovery's reason)

    def sorted(self) -> list[ModelEntry]:
        return sorted(self.entries.values(), key=lambda e: e.id)

    def source(self, entry: ModelEntry) -> str:
        """Where `entry` comes from as the listing says it: directory, hf_cache or demo."""
        return "demo" if self.demo else entry.source


def served_models(settings: Settings, override: str | None = None, hf_cache: bool = True) -> ServedModels:
    """What the server serves: the model folder (`override`: --model-dir) and the hub caches, else the demo
    models when they have been built. `hf_cache=False` leaves hub-cache models out of the answer only: whether
    the demo is served still depends on them, as it does for the server."""
    from mlx_router.demo import demo_model_dir  # imports no mlx

    dirs = [Path(override).expanduser()] if override else settings.model_dirs()
    hf_dirs = default_hf_cache_dirs() if settings.defaults.scan_hf_cache else []
    finder = ModelDiscovery(dirs, hf_dirs)
    found = finder.scan()
    demo_dir = demo_model_dir().parent
    demo = False
    if not found and demo_dir.is_dir():
        found = ModelDiscovery([demo_dir]).scan()
        demo = bool(found)
    if not hf_cache:
        found = {k: e for k, e in found.items() if e.source != "hf_cache"}
    return ServedModels(found, dirs, hf_cache and bool(hf_dirs), demo, demo_dir, finder.skipped())


def describe_sources(served: ServedModels) -> str:
    """Where the models were looked for, for a listing's first line."""
    places = [str(d) for d in served.model_dirs] or ["(no model folder configured)"]
    if served.hf_cache:
        places.append("the Hugging Face cache")
    text = " and ".join([", ".join(places[:-1]), places[-1]] if len(places) > 1 else places)
    if served.demo:
        text += f"; none there, so the built-in demo models in {served.demo_dir}"
    return text


def gb(n_bytes: float) -> float:
    """Bytes as GiB (the unit the config's *_gb keys use), rounded for display."""
    return round(n_bytes / 1024**3, 2)
