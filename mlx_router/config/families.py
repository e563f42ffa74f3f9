"""Which `model_type`s the installed loaders can build, read from their files without importing them.

Discovery runs on the HTTP side, which never imports mlx (importing mlx-lm or mlx-vlm would). So this looks
where `mlx_lm.utils._get_classes` looks: its `MODEL_REMAPPING` and `MODEL_ARCHITECTURE_REMAPPING` (read from
mlx_lm/utils.py's source as literals), then a module `mlx_lm/models/<type>.py` that defines or imports `Model`.
A vision model (its config has a `vision_config`) of a family mlx-vlm has a package for is loadable too (served by
mlx-vlm alone, see `Settings.vision_path`). When mlx-lm's files cannot be read as expected (another layout in a
future version), nothing is refused here: the loader then says what is wrong, as before.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_DEFINES_MODEL = re.compile(r"^class Model\b|^from \S+ import [^\n]*\bModel\b", re.M)


def _package_dir(name: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _literal_assignments(source: str, names: set[str]) -> dict[str, Any]:
    """The values of module-level `NAME = <literal>` assignments in `source` (those that are literals)."""
    found: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in names:
                try:
                    found[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    continue
    return found


@dataclass
class LoaderFamilies:
    """The model types mlx-lm (and, for vision models, mlx-vlm) can load; see the module's docstring."""

    text_models: Path | None  # mlx_lm/models, or None: mlx-lm's layout is not known, refuse nothing
    remapping: dict[str, str]
    architecture_remapping: dict[tuple[str, str], str]
    text_version: str
    _known: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def installed(cls) -> LoaderFamilies:
        """The families of the installed mlx-lm (read once; the instance caches what it looks up)."""
        root = _package_dir("mlx_lm")
        try:
            version = importlib.metadata.version("mlx-lm")
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        if root is None:
            return cls(None, {}, {}, version)
        try:
            source = (root / "utils.py").read_text(encoding="utf-8")
            values = _literal_assignments(source, {"MODEL_REMAPPING", "MODEL_ARCHITECTURE_REMAPPING"})
        except (OSError, SyntaxError, ValueError):
            values = {}
        remapping = values.get("MODEL_REMAPPING")
        if not isinstance(remapping, dict) or not (root / "models").is_dir():
            return cls(None, {}, {}, version)  # not the layout this reads: decide nothing
        by_architecture = values.get("MODEL_ARCHITECTURE_REMAPPING")
        return cls(root / "models", remapping, by_architecture if isinstance(by_architecture, dict) else {}, version)

    def text_model_type(self, config: dict[str, Any]) -> str:
        """The module name mlx-lm would import for `config` (as `_get_classes` remaps it)."""
        model_type = str(config.get("model_type"))
        architectures = config.get("architectures") or ()
        for architecture in (architectures,) if isinstance(architectures, str) else architectures:
            remapped = self.architecture_remapping.get((model_type, str(architecture)))
            if remapped is not None:
                return remapped
        return self.remapping.get(model_type, model_type)

    def has_text_model(self, config: dict[str, Any]) -> bool:
        """Whether mlx-lm has model classes for `config` (True when that cannot be told)."""
        if self.text_models is None:
            return True
        name = self.text_model_type(config)
        if name not in self._known:
            self._known[name] = self._defines_model(name)
        return self._known[name]

    def _defines_model(self, name: str) -> bool:
        assert self.text_models is not None
        if not name.isidentifier():
            return False
        for file in (self.text_models / f"{name}.py", self.text_models / name / "__init__.py"):
            try:
                return bool(_DEFINES_MODEL.search(file.read_text(encoding="utf-8")))
            except OSError:
                continue
        return False

    def encoder_problem(self, config: dict[str, Any]) -> str | None:
        """Why mlx-embeddings cannot build the bidirectional encoder `config` describes (BERT and kin), or None."""
        model_type = str(config.get("model_type")).replace("-", "_")
        root = _package_dir("mlx_embeddings")
        if root is None:
            return f"model_type {model_type!r} is an embedding encoder and mlx-embeddings is not installed"
        if not model_type.isidentifier() or not (root / "models" / f"{model_type}.py").is_file():
            return f"model_type {model_type!r} is not supported by mlx-embeddings"
        return None

    def problem(self, config: dict[str, Any]) -> str | None:
        """Why no loader can build the model `config` describes, or None when one can."""
        from mlx_router.vision.spec import is_vision_config, mlx_vlm_has_family  # imports no mlx

        model_type = config.get("model_type")
        if not isinstance(model_type, str) or not model_type:
            return "config.json has no model_type"
        if self.has_text_model(config):
            return None
        if is_vision_config(config):
            if model_type.replace("-", "_").isidentifier() and mlx_vlm_has_family(model_type):
                return None
            return f"model_type {model_type!r} is known to neither mlx-lm {self.text_version} nor mlx-vlm"
        return f"model_type {model_type!r} is not supported by mlx-lm {self.text_version}"
