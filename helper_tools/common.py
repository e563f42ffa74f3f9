"""What the helper tools share: reading the server's config and finding its model folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mlx_router.config.discovery import ModelDiscovery, default_hf_cache_dirs
from mlx_router.config.settings import Settings, load_settings

DEFAULT_CONFIG = "config.json"
FALLBACK_MODEL_DIR = "~/models"  # the folder config.json's example uses


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


def model_dir(settings: Settings, override: str | None) -> Path:
    """The folder models are installed into and listed from: --model-dir, else the server's own."""
    if override:
        return Path(override).expanduser()
    configured = settings.defaults.model_directory  # load_settings already applied MLX_MODEL_DIR
    return Path(configured or FALLBACK_MODEL_DIR).expanduser()


def discovery(settings: Settings, folder: Path, hf_cache: bool) -> ModelDiscovery:
    """Model discovery over `folder` (and the Hugging Face caches when `hf_cache`), as the server does it."""
    hf_dirs = default_hf_cache_dirs() if hf_cache and settings.defaults.scan_hf_cache else []
    return ModelDiscovery([folder], hf_dirs)


def gb(n_bytes: float) -> float:
    """Bytes as GiB (the unit the config's *_gb keys use), rounded for display."""
    return round(n_bytes / 1024**3, 2)
