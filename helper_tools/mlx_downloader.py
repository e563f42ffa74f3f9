"""Download an MLX model from the Hugging Face hub into the server's model folder, or list the served models.

    python helper_tools/mlx_downloader.py mlx-community/Qwen3-8B-4bit   # -> <model_dir>/mlx-community/...
    python helper_tools/mlx_downloader.py --list

The same as `mlx-router models download` and `mlx-router models list` (mlx_router/tools/). This is the only
part of mlx-router that uses the network, and only when you run it: the server itself never downloads (it runs
with HF_HUB_OFFLINE=1). A download that was cut off resumes when run again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the checkout (mlx_router, helper_tools) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlx_router.config.settings import ConfigError  # noqa: E402
from mlx_router.tools.common import add_config_arguments, load_tool_settings, model_dir, served_models  # noqa: E402
from mlx_router.tools.download import (  # noqa: E402
    DownloadError,
    allow_patterns,
    download,
    install,
    list_lines,
    target_dir,
)

__all__ = ["allow_patterns", "build_parser", "download", "main", "target_dir"]


def build_parser() -> argparse.ArgumentParser:
    """The tool's arguments."""
    p = argparse.ArgumentParser(
        prog="mlx_downloader.py",
        description="Download an MLX model from the Hugging Face hub into mlx-router's model folder "
        "(<model_dir>/<org>/<name>), or list the models the server serves.",
    )
    p.add_argument("repo", nargs="?", help="hub repository, e.g. mlx-community/Qwen3-8B-4bit")
    add_config_arguments(p)
    p.add_argument("--revision", help="branch, tag or commit to download (default: main)")
    p.add_argument("--list", action="store_true", help="list the served models instead (no network)")
    p.add_argument("--no-hf-cache", action="store_true", help="with --list: leave out models in the Hugging Face cache")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_tool_settings(args.config)
    except ConfigError as e:
        print(f"mlx_downloader: {e}", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(list_lines(served_models(settings, args.model_dir, hf_cache=not args.no_hf_cache))))
        return 0
    if not args.repo:
        parser.error("give a repository to download, or --list")
    root = model_dir(settings, args.model_dir)
    try:
        install(args.repo, root, settings, args.revision, sys.stdout, "python helper_tools/mlx_downloader.py")
    except (ValueError, DownloadError) as e:
        print(f"mlx_downloader: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # network, authentication, unknown repository: the hub's message says which
        print(f"mlx_downloader: the download failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
