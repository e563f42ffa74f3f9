"""Download an MLX model from the Hugging Face hub into the server's model folder, or list installed models.

    python helper_tools/mlx_downloader.py mlx-community/Qwen3-8B-4bit   # -> <model_dir>/mlx-community/...
    python helper_tools/mlx_downloader.py --list

This is the only part of mlx-router that uses the network, and only when you run it: the server itself never
downloads (it runs with HF_HUB_OFFLINE=1). Files are fetched with the patterns mlx-lm loads (config, weights,
tokenizer, chat template), and a download that was cut off resumes when run again.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the checkout (mlx_router, helper_tools) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helper_tools.common import add_config_arguments, discovery, gb, load_tool_settings, model_dir  # noqa: E402
from mlx_router.config.discovery import ModelDiscovery, is_valid_model_id  # noqa: E402
from mlx_router.config.settings import ConfigError  # noqa: E402

_TRUE = {"1", "ON", "YES", "TRUE"}  # how huggingface_hub reads boolean variables


def build_parser() -> argparse.ArgumentParser:
    """The tool's arguments."""
    p = argparse.ArgumentParser(
        prog="mlx_downloader.py",
        description="Download an MLX model from the Hugging Face hub into mlx-router's model folder "
        "(<model_dir>/<org>/<name>), or list the installed models.",
    )
    p.add_argument("repo", nargs="?", help="hub repository, e.g. mlx-community/Qwen3-8B-4bit")
    add_config_arguments(p)
    p.add_argument("--revision", help="branch, tag or commit to download (default: main)")
    p.add_argument("--list", action="store_true", help="list the installed models instead (no network)")
    p.add_argument("--no-hf-cache", action="store_true", help="with --list: leave out models in the Hugging Face cache")
    return p


def allow_patterns() -> list[str]:
    """The files mlx-lm itself downloads for a model (weights, config, tokenizer, templates)."""
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    return list(DEFAULT_ALLOW_PATTERNS)


def target_dir(root: Path, repo: str) -> Path:
    """Where `repo` goes: <root>/<org>/<name> (the server then calls the model `org/name`)."""
    if not is_valid_model_id(repo):
        raise ValueError(f"{repo!r} is not a hub repository id like org/name")
    return root.joinpath(*repo.split("/"))


def list_models(found: ModelDiscovery) -> list[str]:
    """One line per model the server would serve: id, size, where it comes from, path."""
    entries = sorted(found.scan().values(), key=lambda e: e.id)
    if not entries:
        return ["no models found"]
    width = max(len(e.id) for e in entries)
    return [f"{e.id:<{width}}  {gb(e.size_bytes):>8.2f} GB  {e.source:<9}  {e.path}" for e in entries]


def download(repo: str, destination: Path, revision: str | None) -> Path:
    """Fetch `repo` into `destination` (network). Refuses when HF_HUB_OFFLINE is set: that is a choice."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE:
        raise RuntimeError(
            "HF_HUB_OFFLINE is set, so nothing can be downloaded; run this tool without it "
            "(e.g. `env -u HF_HUB_OFFLINE python helper_tools/mlx_downloader.py ...`)"
        )
    from huggingface_hub import snapshot_download

    created = [d for d in (destination.parent, destination) if not d.exists()]
    destination.mkdir(parents=True, exist_ok=True)
    try:
        path = snapshot_download(repo, revision=revision, local_dir=destination, allow_patterns=allow_patterns())
    except BaseException:
        for folder in reversed(created):  # leave no empty folders behind; a partial download stays to resume
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_tool_settings(args.config)
    except ConfigError as e:
        print(f"mlx_downloader: {e}", file=sys.stderr)
        return 2
    root = model_dir(settings, args.model_dir)
    if args.list:
        hf_cache = settings.defaults.scan_hf_cache and not args.no_hf_cache
        print(f"models in {root}" + (" and the Hugging Face cache" if hf_cache else "") + ":")
        print("\n".join(list_models(discovery(settings, root, hf_cache=hf_cache))))
        return 0
    if not args.repo:
        parser.error("give a repository to download, or --list")
    try:
        destination = target_dir(root, args.repo)
        print(f"downloading {args.repo} into {destination}")
        download(args.repo, destination, args.revision)
    except (ValueError, RuntimeError) as e:
        print(f"mlx_downloader: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # network, authentication, unknown repository: the hub's message says which
        print(f"mlx_downloader: the download failed: {e}", file=sys.stderr)
        return 1
    entry = ModelDiscovery([root]).resolve(args.repo)
    if entry is None:
        print(
            f"mlx_downloader: {destination} holds no loadable model (config.json and *.safetensors); "
            "is the repository an MLX model?",
            file=sys.stderr,
        )
        return 1
    print(f'installed {entry.id} ({gb(entry.size_bytes):.2f} GB of weights); request it as "model": "{entry.id}"')
    served = settings.defaults.model_directory
    if served is None or Path(served).expanduser() != root:
        print(
            f"note: the server reads {served or 'no model folder'}; set "
            f"defaults.model_directory (or --model-dir) to {root} to serve this model"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
