"""Downloading an MLX model from the Hugging Face hub into the server's model folder, and listing models.

This is the only part of mlx-router that uses the network, and only when a user runs it: the server itself
never downloads (it runs with HF_HUB_OFFLINE=1). Files are fetched with the patterns mlx-lm loads (config,
weights, tokenizer, chat template), and a download that was cut off resumes when run again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from mlx_router.config.discovery import ModelDiscovery, is_valid_model_id
from mlx_router.config.settings import Settings
from mlx_router.demo import DEMO_MODEL_ID
from mlx_router.tools.common import ServedModels, describe_sources, gb

_TRUE = {"1", "ON", "YES", "TRUE"}  # how huggingface_hub reads boolean variables


class DownloadError(RuntimeError):
    """A download that cannot start or did not give a loadable model; the message says why."""


def allow_patterns() -> list[str]:
    """The files mlx-lm itself downloads for a model (weights, config, tokenizer, templates)."""
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    return list(DEFAULT_ALLOW_PATTERNS)


def target_dir(root: Path, repo: str) -> Path:
    """Where `repo` goes: <root>/<org>/<name> (the server then calls the model `org/name`)."""
    if not is_valid_model_id(repo):
        raise ValueError(f"{repo!r} is not a hub repository id like org/name")
    return root.joinpath(*repo.split("/"))


def offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids downloads (as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def download(repo: str, destination: Path, revision: str | None, command: str = "mlx-router models download") -> Path:
    """Fetch `repo` into `destination` (network). Refuses when HF_HUB_OFFLINE is set: that is a choice."""
    if offline():
        raise DownloadError(
            "HF_HUB_OFFLINE is set, so nothing can be downloaded; run this without it "
            f"(e.g. `env -u HF_HUB_OFFLINE {command} {repo}`)"
        )
    from huggingface_hub import snapshot_download

    created = [d for d in (destination, *destination.parents) if not d.exists()]  # innermost first
    destination.mkdir(parents=True, exist_ok=True)
    try:
        path = snapshot_download(repo, revision=revision, local_dir=destination, allow_patterns=allow_patterns())
    except BaseException:
        for folder in created:  # leave no empty folders behind; a partial download stays to resume
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return Path(path)


def install(
    repo: str,
    root: Path,
    settings: Settings,
    revision: str | None,
    out: TextIO,
    command: str = "mlx-router models download",
) -> None:
    """Download `repo` into `root` and check that the server can serve it; DownloadError or ValueError say why
    not (other exceptions are the hub's: network, authentication, unknown repository)."""
    destination = target_dir(root, repo)
    print(f"downloading {repo} into {destination}", file=out)
    download(repo, destination, revision, command)
    entry = ModelDiscovery([root]).resolve(repo)
    if entry is None:
        raise DownloadError(
            f"{destination} holds no loadable model (config.json and *.safetensors); is the repository an MLX model?"
        )
    print(
        f'installed {entry.id} ({gb(entry.size_bytes):.2f} GB of weights); request it as "model": "{entry.id}"',
        file=out,
    )
    served = settings.defaults.model_directory
    if served is None or Path(served).expanduser() != root:
        print(
            f"note: the server reads {served or 'no model folder'}; set defaults.model_directory "
            f"(or --model-dir) to {root} to serve this model",
            file=out,
        )


def list_lines(served: ServedModels) -> list[str]:
    """A listing of the served models: where they were looked for, then one line per model (id, size, source,
    vision family, path)."""
    lines = [f"models in {describe_sources(served)}:"]
    entries = served.sorted()
    if not entries:
        lines.append("no models found")
        if not served.demo_dir.joinpath(DEMO_MODEL_ID).is_dir():
            lines.append("(the server builds and serves its built-in demo models on start when it finds none)")
        return lines
    width = max(len(e.id) for e in entries)
    for e in entries:
        vision = f"vision:{e.vision}" if e.vision else "text"
        lines.append(f"{e.id:<{width}}  {gb(e.size_bytes):>8.2f} GB  {served.source(e):<9}  {vision:<16}  {e.path}")
    return lines
