"""Model discovery: the loadable models in the configured model folders and the Hugging Face hub cache.

Layouts recognised in each model dir (a model folder holds `config.json` and at least one `*.safetensors`):

    <dir>/my-model/                              -> "my-model"
    <dir>/org/name/                              -> "org/name"
    <dir>/models--org--name/snapshots/<hash>/    -> "org/name"  (HF cache layout, newest loadable snapshot)

A hub cache (`default_hf_cache_dirs()`) is read for the HF layout only. Model dirs come before hub caches,
and the first folder to claim an id keeps it. Folders that are not loadable models (no config.json,
config.json not a JSON object, a `model_type` no installed loader can build (`families.py`: decided here, so
the model is never listed and then fails when asked for), no weights, a weight file whose link is broken,
unreadable) are skipped with one log line per folder and reason for the life of the ModelDiscovery, never an
exception; `unservable(id)` says why a folder that would have had that id was skipped.

Ids and paths: `resolve()` looks an id up in the map a scan built; an id is never joined onto a path, and
ids that could mean a path (`..`, absolute, backslashes, empty segments, more than one `/`, NUL) are refused
before the lookup. Model folders inside a model dir may themselves be symlinks to anywhere: users link
models in from other disks, and following those links is intended. What must not escape the configured
dirs is the *id*, and it cannot: every id in the map was made from a folder name found by listing them.

Cost: `scan()` lists the dirs and stats each candidate folder and its config.json. What a folder holds (its
weights' size, whether config.json parses) is cached keyed by those stats, so config.json is read and the
weights listed again only when the folder or its config.json changed. New folders show up on the next scan.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlx_router.config.embedding_spec import EmbeddingSpec, folder_spec
from mlx_router.config.families import LoaderFamilies

logger = logging.getLogger(__name__)

HF_REPO_PREFIX = "models--"
WEIGHTS_SUFFIX = ".safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class ModelEntry:
    """One loadable model found on disk."""

    id: str  # "my-model" or "org/name"
    path: Path  # resolved directory holding config.json and the weights
    size_bytes: int  # total size of the *.safetensors files
    created: int  # unix time: the model folder's mtime
    source: str  # "directory" (a plain folder) or "hf_cache" (the models--org--name layout)
    vision: str | None = None  # a vision model's model_type (its config has a vision tower), else None
    text_class: bool = True  # mlx-lm has a class for its text part (else only mlx-vlm can load it)
    embedding: EmbeddingSpec | None = None  # an embedding model's pooling (`config/embedding_spec.py`), else None


def is_valid_model_id(model_id: str) -> bool:
    """Whether `model_id` is `name` or `org/name` with no part that could steer a path lookup."""
    if not model_id or "\x00" in model_id or "\\" in model_id:
        return False
    parts = model_id.split("/")
    return len(parts) <= 2 and all(part and part not in (".", "..") for part in parts)


def _hf_repo_id(folder_name: str) -> str | None:
    """`models--org--name` -> `org/name` (`models--name` -> `name`); None when the name is not that layout."""
    if not folder_name.startswith(HF_REPO_PREFIX):
        return None
    parts = folder_name[len(HF_REPO_PREFIX) :].split("--")
    if len(parts) > 2 or not all(parts):
        return None
    return "/".join(parts)


@dataclass(frozen=True)
class _Inspection:
    """What one folder holds: a loadable model's numbers, or why it is not one."""

    path: Path | None = None
    size_bytes: int = 0
    created: int = 0
    problem: str | None = None
    vision: str | None = None
    text_class: bool = True
    embedding: EmbeddingSpec | None = None


_Signature = tuple[int, ...]


@dataclass
class _Scan:
    """The state of one scan() call."""

    found: dict[str, ModelEntry] = field(default_factory=dict)
    unservable: dict[str, str] = field(default_factory=dict)  # id -> why its folder was skipped
    cache: dict[str, tuple[_Signature, _Inspection]] = field(default_factory=dict)
    log_level: int = logging.WARNING


def _read_model_folder(folder: str, mtime: float, families: LoaderFamilies) -> _Inspection:
    """Read config.json, check its model type and size up the weights (the part of an inspection that the
    cache saves)."""
    try:
        with open(os.path.join(folder, CONFIG_FILE), encoding="utf-8") as fh:
            config = json.load(fh)
    except OSError as exc:
        return _Inspection(problem=f"config.json is unreadable ({exc.strerror or exc})")
    except ValueError:  # also UnicodeDecodeError
        return _Inspection(problem="config.json is not valid JSON")
    if not isinstance(config, dict):
        return _Inspection(problem="config.json is not a JSON object")
    embedding = folder_spec(folder, config)
    if isinstance(embedding, str):
        return _Inspection(problem=f"an embedding model that cannot be served: {embedding}")
    unsupported = families.encoder_problem(config) if embedding and embedding.encoder else families.problem(config)
    if unsupported is not None:
        return _Inspection(problem=unsupported)
    size, count = 0, 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.endswith(WEIGHTS_SUFFIX):
                    continue
                try:
                    size += entry.stat().st_size  # follows links: HF snapshots link into blobs/
                except OSError:
                    return _Inspection(problem=f"weight file {entry.name} is missing (broken link?)")
                count += 1
    except OSError as exc:
        return _Inspection(problem=f"folder is unreadable ({exc.strerror or exc})")
    if count == 0:
        return _Inspection(problem=f"no *{WEIGHTS_SUFFIX} weights")
    vision = str(config.get("model_type")) if isinstance(config.get("vision_config"), dict) else None
    text_class = families.has_text_model(config)
    return _Inspection(
        path=Path(folder).resolve(),
        size_bytes=size,
        created=int(mtime),
        vision=vision,
        text_class=text_class,
        embedding=embedding,
    )


class ModelDiscovery:
    """Finds models in `model_dirs` (flat, org/name and HF layouts) and `hf_cache_dirs` (HF layout).

    Thread-safe; `scan()` re-reads the disk each call (cheaply), so models appear without a restart.
    """

    def __init__(
        self, model_dirs: Sequence[Path], hf_cache_dirs: Sequence[Path] = (), families: LoaderFamilies | None = None
    ) -> None:
        self._model_dirs = tuple(Path(d).expanduser() for d in model_dirs)
        self._hf_cache_dirs = tuple(Path(d).expanduser() for d in hf_cache_dirs)
        self._families = families  # read from the installed loaders at the first scan when not given
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[_Signature, _Inspection]] = {}
        self._reported: set[tuple[str, str]] = set()
        self._unservable: dict[str, str] = {}

    def scan(self) -> dict[str, ModelEntry]:
        """Every loadable model by id (a fresh dict: the caller may keep or change it)."""
        with self._lock:
            scan = _Scan()
            for root in self._model_dirs:
                self._scan_root(root, scan, hub_cache=False)
            scan.log_level = logging.INFO  # a hub cache holds many repos that are not MLX models
            for root in self._hf_cache_dirs:
                self._scan_root(root, scan, hub_cache=True)
            self._cache = scan.cache  # folders that vanished drop out of the cache
            self._unservable = {k: v for k, v in scan.unservable.items() if k not in scan.found}
            return scan.found

    def resolve(self, model_id: str) -> ModelEntry | None:
        """The model called `model_id`, or None (also for ids that look like paths)."""
        if not isinstance(model_id, str) or not is_valid_model_id(model_id):
            return None
        return self.scan().get(model_id)

    def skipped(self) -> dict[str, str]:
        """Why each folder the last scan skipped was skipped, by the id it would have had (see `unservable`)."""
        with self._lock:
            return dict(self._unservable)

    def unservable(self, model_id: str) -> str | None:
        """Why the folder that would be `model_id` was skipped by the last scan, if one was (no path: clients
        see it; the log line names the folder)."""
        with self._lock:
            return self._unservable.get(model_id)

    # Paths are plain strings below: a scan touches thousands of them and pathlib costs most of its time.

    def _report(self, path: str, problem: str, scan: _Scan) -> None:
        key = (path, problem)
        if key not in self._reported:
            self._reported.add(key)
            logger.log(scan.log_level, "model discovery: skipping %s: %s", path, problem)

    def _list_dir(self, path: str, scan: _Scan) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as entries:
                return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
        except FileNotFoundError:
            self._report(path, "does not exist", scan)
        except OSError as exc:
            self._report(path, f"unreadable ({exc.strerror or exc})", scan)
        return []

    def _is_folder(self, entry: os.DirEntry[str], scan: _Scan) -> bool:
        try:
            if entry.is_dir():  # follows symlinks: linked-in model folders are welcome
                return True
        except OSError:
            pass
        if entry.is_symlink() and not os.path.exists(entry.path):
            self._report(entry.path, "broken symbolic link", scan)
        return False

    def _scan_root(self, root: Path, scan: _Scan, *, hub_cache: bool) -> None:
        for entry in self._list_dir(str(root), scan):
            if entry.name.startswith(HF_REPO_PREFIX):
                if self._is_folder(entry, scan):
                    self._add_hf_repo(entry.path, entry.name, scan)
            elif hub_cache:
                continue  # datasets--*, spaces--*, version files
            elif self._is_folder(entry, scan):
                if os.path.lexists(os.path.join(entry.path, CONFIG_FILE)):
                    self._add_model(entry.name, entry.path, "directory", scan)
                else:
                    self._scan_org(entry.path, entry.name, scan)

    def _scan_org(self, org: str, org_name: str, scan: _Scan) -> None:
        """`org/name/` folders one level down; the org folder itself is not a model."""
        candidates = [e for e in self._list_dir(org, scan) if self._is_folder(e, scan)]
        models = {e.name for e in candidates if os.path.lexists(os.path.join(e.path, CONFIG_FILE))}
        if not models:
            self._report(org, "no config.json, here or in its sub-folders", scan)
            return
        for entry in candidates:
            if entry.name in models:
                self._add_model(f"{org_name}/{entry.name}", entry.path, "directory", scan)
            else:
                self._report(entry.path, "no config.json", scan)

    def _add_hf_repo(self, repo: str, repo_name: str, scan: _Scan) -> None:
        """`models--org--name/snapshots/<hash>/`: the newest snapshot that is a loadable model."""
        model_id = _hf_repo_id(repo_name)
        if model_id is None or not is_valid_model_id(model_id):
            self._report(repo, "not a models--org--name folder", scan)
            return
        snapshots_dir = os.path.join(repo, "snapshots")
        if not os.path.isdir(snapshots_dir):
            self._report(repo, "no snapshots folder", scan)
            return
        snapshots = []
        for entry in self._list_dir(snapshots_dir, scan):
            try:
                snapshots.append((entry.stat().st_mtime_ns, entry.name, entry.path))
            except OSError:
                continue  # a snapshot link that points nowhere: older ones may still do
        newest_problem = None
        for _, _, snapshot in sorted(snapshots, reverse=True):
            inspection = self._inspect(snapshot, scan)
            if inspection.problem is None:
                self._register(model_id, inspection, "hf_cache", snapshot, scan)
                return
            newest_problem = newest_problem or inspection.problem
        problem = f"newest snapshot: {newest_problem}" if newest_problem else "no snapshots"
        scan.unservable.setdefault(model_id, problem)
        self._report(repo, problem, scan)

    def _add_model(self, model_id: str, folder: str, source: str, scan: _Scan) -> None:
        if not is_valid_model_id(model_id):
            self._report(folder, "its name cannot be a model id", scan)
            return
        inspection = self._inspect(folder, scan)
        if inspection.problem is not None:
            scan.unservable.setdefault(model_id, inspection.problem)
            self._report(folder, inspection.problem, scan)
            return
        self._register(model_id, inspection, source, folder, scan)

    def _register(self, model_id: str, inspection: _Inspection, source: str, folder: str, scan: _Scan) -> None:
        taken = scan.found.get(model_id)
        if taken is not None:
            self._report(folder, f"duplicate id {model_id!r}, already found at {taken.path}", scan)
            return
        assert inspection.path is not None
        scan.found[model_id] = ModelEntry(
            id=model_id,
            path=inspection.path,
            size_bytes=inspection.size_bytes,
            created=inspection.created,
            source=source,
            vision=inspection.vision,
            text_class=inspection.text_class,
            embedding=inspection.embedding,
        )

    def _inspect(self, folder: str, scan: _Scan) -> _Inspection:
        """Stat the folder and its config.json; read them again only when those stats changed."""
        try:
            st = os.stat(folder)
        except OSError as exc:
            return _Inspection(problem=f"unreadable ({exc.strerror or exc})")
        config = os.path.join(folder, CONFIG_FILE)
        try:
            cst = os.stat(config)
        except FileNotFoundError:
            broken = os.path.lexists(config)
            return _Inspection(problem="config.json is a broken link" if broken else "no config.json")
        except OSError as exc:
            return _Inspection(problem=f"config.json is unreadable ({exc.strerror or exc})")
        signature = (st.st_ino, st.st_mtime_ns, cst.st_ino, cst.st_mtime_ns, cst.st_size)
        cached = self._cache.get(folder)
        if cached is None or cached[0] != signature:
            if self._families is None:
                self._families = LoaderFamilies.installed()
            cached = (signature, _read_model_folder(folder, st.st_mtime, self._families))
        scan.cache[folder] = cached
        return cached[1]


def default_hf_cache_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The Hugging Face hub caches that exist: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub.

    Also the older HUGGINGFACE_HUB_CACHE and $XDG_CACHE_HOME/huggingface/hub, which huggingface_hub honours.
    """
    env = os.environ if environ is None else environ
    candidates: list[Path] = []
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            candidates.append(Path(env[name]))
    if env.get("HF_HOME"):
        candidates.append(Path(env["HF_HOME"]) / "hub")
    if env.get("XDG_CACHE_HOME"):
        candidates.append(Path(env["XDG_CACHE_HOME"]) / "huggingface" / "hub")
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    candidates.append(home / ".cache" / "huggingface" / "hub")
    result: list[Path] = []
    seen: set[Path] = set()
    for path in candidates:
        path = path.expanduser()
        resolved = path.resolve()
        if resolved not in seen and path.is_dir():
            seen.add(resolved)
            result.append(path)
    return result
