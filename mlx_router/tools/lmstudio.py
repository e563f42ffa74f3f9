"""Sharing models with LM Studio by symbolic links, both ways: never a copy, never an overwrite.

LM Studio keeps models as `<models>/<publisher>/<model>/` (`~/.lmstudio/models`, formerly
`~/.cache/lm-studio/models`), the `org/name` layout mlx-router's model folder reads too. Its MLX models (a
config.json and *.safetensors) can be linked into this server's folder (`from-lmstudio`); the models this server
serves can be linked into LM Studio's (`to-lmstudio`; a plain `name` goes under the publisher `mlx-router`).
Something already at a link's place is left alone and reported; a link to the same folder counts as done.
A model that is itself a link from the other side is not linked back.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mlx_router.config.discovery import CONFIG_FILE, WEIGHTS_SUFFIX, ModelEntry

LMSTUDIO_DIRS = ("~/.lmstudio/models", "~/.cache/lm-studio/models")  # LM Studio 0.3 and later; before 0.3
LMSTUDIO_ENV = "LMSTUDIO_MODELS_DIR"
FLAT_PUBLISHER = "mlx-router"  # LM Studio wants publisher/model; a flat id goes under this publisher


class LinkError(ValueError):
    """The linker cannot run (no LM Studio folder, say); the message says why."""


@dataclass(frozen=True)
class Link:
    """A symbolic link to create at `path`, pointing at the model folder `target`."""

    model_id: str
    path: Path
    target: Path


@dataclass(frozen=True)
class Skip:
    """A model not linked, and why; `conflict`: something else is in the way (an error for the exit status)."""

    model_id: str
    path: Path
    reason: str
    conflict: bool = False


Step = Link | Skip


def lmstudio_dir(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """LM Studio's model folder: `explicit` (--lmstudio-dir), else $LMSTUDIO_MODELS_DIR, else the first of
    LMSTUDIO_DIRS that exists; LinkError when none does."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit).expanduser()
    if env.get(LMSTUDIO_ENV):
        return Path(env[LMSTUDIO_ENV]).expanduser()
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    for candidate in LMSTUDIO_DIRS:
        path = home / candidate.removeprefix("~/")
        if path.is_dir():
            return path
    raise LinkError(
        f"LM Studio's model folder was not found ({', '.join(LMSTUDIO_DIRS)}); "
        f"name it with --lmstudio-dir or {LMSTUDIO_ENV}"
    )


def _is_inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def _folders(path: Path) -> Iterator[Path]:
    try:
        children = sorted(path.iterdir())
    except OSError:
        return
    for child in children:
        if not child.name.startswith(".") and child.is_dir():
            yield child


def _mlx_problem(folder: Path) -> str | None:
    """Why `folder` is not an MLX model mlx-router could load (None: it is one)."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if any(n.endswith(".gguf") for n in names) and CONFIG_FILE not in names:
        return "a GGUF model (LM Studio's llama.cpp format), not MLX"
    if CONFIG_FILE not in names or not any(n.endswith(WEIGHTS_SUFFIX) for n in names):
        return f"not an MLX model (no {CONFIG_FILE} with *{WEIGHTS_SUFFIX})"
    return None


def lmstudio_models(root: Path) -> Iterator[tuple[str, Path, str | None]]:
    """(publisher/model, folder, why it cannot be linked or None) for each model folder in LM Studio's layout."""
    for publisher in _folders(root):
        for model in _folders(publisher):
            yield f"{publisher.name}/{model.name}", model, _mlx_problem(model)


def _place(model_id: str, path: Path, target: Path) -> Step:
    """A link from `path` to `target`, unless something is there."""
    if path.is_symlink():
        if path.resolve() == target.resolve():
            return Skip(model_id, path, "linked already")
        return Skip(model_id, path, f"{path} exists (a link to {os.readlink(path)}); not replaced", conflict=True)
    if path.exists():
        return Skip(model_id, path, f"{path} exists; not replaced", conflict=True)
    return Link(model_id, path, target)


def plan_from_lmstudio(lmstudio: Path, model_root: Path, only: Collection[str] = ()) -> list[Step]:
    """Links in `model_root` to LM Studio's MLX models (`only`: these ids alone)."""
    steps: list[Step] = []
    for model_id, folder, problem in lmstudio_models(lmstudio):
        if only and model_id not in only:
            continue
        dest = model_root.joinpath(*model_id.split("/"))
        if problem is not None:
            steps.append(Skip(model_id, folder, problem))
        elif _is_inside(folder, model_root):
            steps.append(Skip(model_id, folder, "a link to mlx-router's own model folder"))
        else:
            steps.append(_place(model_id, dest, folder))
    return steps + _missing(steps, only)


def plan_to_lmstudio(entries: Sequence[ModelEntry], lmstudio: Path, only: Collection[str] = ()) -> list[Step]:
    """Links in LM Studio's folder to the models the server serves (`only`: these ids alone)."""
    steps: list[Step] = []
    for entry in entries:
        if only and entry.id not in only:
            continue
        parts = entry.id.split("/")
        dest = lmstudio.joinpath(*(parts if len(parts) == 2 else [FLAT_PUBLISHER, *parts]))
        if _is_inside(entry.path, lmstudio):
            steps.append(Skip(entry.id, entry.path, "it is in LM Studio's folder already"))
        else:
            steps.append(_place(entry.id, dest, entry.path))
    return steps + _missing(steps, only)


def _missing(steps: Sequence[Step], only: Collection[str]) -> list[Step]:
    seen = {s.model_id for s in steps}
    return [Skip(m, Path(m), "no such model", conflict=True) for m in only if m not in seen]


def execute(steps: Sequence[Step], out: TextIO, dry_run: bool = False) -> int:
    """Create the links (or with `dry_run` only say what would be done); 1 when something was in the way."""
    status = 0
    for step in steps:
        if isinstance(step, Skip):
            print(f"skip {step.model_id}: {step.reason}", file=out)
            status = status or int(step.conflict)
            continue
        print(f"{'would link' if dry_run else 'link'} {step.path} -> {step.target}", file=out)
        if dry_run:
            continue
        step.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            step.path.symlink_to(step.target, target_is_directory=True)
        except FileExistsError:  # appeared since the plan was made: still never replaced
            print(f"  {step.path} appeared meanwhile; not replaced", file=out)
            status = 1
    linked = sum(isinstance(s, Link) for s in steps)
    print(f"{linked} link(s) {'to create' if dry_run else 'created'}; nothing copied", file=out)
    return status
