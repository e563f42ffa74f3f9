"""The configuration's documentation, generated from one source: the pydantic settings (`settings.py`, and
`vision/limits.py` for `server.media`), whose field descriptions and defaults become README's key tables,
config.json's `_help` objects and config.schema.json (a JSON Schema editors check config files with).

    python -m mlx_router.config.docs --write   # rewrite the three from the settings
    python -m mlx_router.config.docs --check   # exit 1 naming each one that is stale (tests/unit/test_config_docs.py)

config.json keeps its values (they are examples: `model_directory` is `~/models`, `models` holds a sample entry);
a key it lacks is added with its default, and keys are put in the settings' order, nested sections last.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mlx_router.config.settings import DefaultsConfig, DistributedConfig, ModelSettings, ServerConfig, Settings
from mlx_router.vision.limits import MediaLimits

REPO = Path(__file__).resolve().parents[2]
README = "README.md"
CONFIG = "config.json"
SCHEMA = "config.schema.json"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class Section:
    """One object of config.json: its name in the docs, its settings model and where it sits in the file."""

    name: str  # "defaults", "server", "server.media", "models" (one entry per model id)
    model: type[BaseModel]
    path: tuple[str, ...]


SECTIONS = (
    Section("defaults", DefaultsConfig, ("defaults",)),
    Section("server", ServerConfig, ("server",)),
    Section("server.media", MediaLimits, ("server", "media")),
    Section("distributed", DistributedConfig, ("distributed",)),
    Section("models", ModelSettings, ("models",)),
)


def _is_section(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def _default(field: FieldInfo) -> Any:
    return field.get_default(call_default_factory=True)


def default_text(field: FieldInfo) -> str:
    """A field's default as the docs print it: JSON's spelling, whole floats without '.0', strings bare."""
    value = _default(field)
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, str) else json.dumps(value)


def description(name: str, field: FieldInfo) -> str:
    """A field's description; every key must have one (that is the documentation)."""
    if not field.description:
        raise ValueError(f"{name} has no description in its pydantic Field")
    return field.description


def readme_table(section: Section) -> str:
    """The markdown table of one section's keys."""
    lines = ["| key | default | what it does |", "|---|---|---|"]
    for key, field in section.model.model_fields.items():
        text = description(f"{section.name}.{key}", field).replace("|", "\\|")
        default = default_text(field).replace("|", "\\|")
        lines.append(f"| `{key}` | {default} | {text} |")
    return "\n".join(lines)


def update_readme(text: str) -> str:
    """README with each `<!-- config:NAME -->` ... `<!-- /config:NAME -->` block holding its section's table."""
    for section in SECTIONS:
        start, end = f"<!-- config:{section.name} -->", f"<!-- /config:{section.name} -->"
        found = re.search(re.escape(start) + r"\n.*?" + re.escape(end), text, re.S)
        if found is None:
            raise ValueError(f"{README} has no {start} ... {end} block")
        text = f"{text[: found.start()]}{start}\n{readme_table(section)}\n{end}{text[found.end() :]}"
    return text


def _documented(obj: dict[str, Any], model: type[BaseModel], add_missing: bool = True) -> dict[str, Any]:
    """`obj` with `_help` first, then the model's keys in order (nested sections last), then any other keys."""
    fields = model.model_fields
    out: dict[str, Any] = {"_help": {k: description(k, f) for k, f in fields.items()}}
    ordered = [k for k, f in fields.items() if not _is_section(f)] + [k for k, f in fields.items() if _is_section(f)]
    for key in ordered:
        if key in obj:
            out[key] = obj[key]
        elif add_missing and not _is_section(fields[key]):
            out[key] = _default(fields[key])
    out.update({k: v for k, v in obj.items() if k not in out})
    return out


def update_config(data: dict[str, Any]) -> dict[str, Any]:
    """config.json's content with every section's `_help` (and any missing key) from the settings."""
    out: dict[str, Any] = {"$schema": f"./{SCHEMA}"}
    out.update({k: v for k, v in data.items() if k != "$schema"})
    out["defaults"] = _documented(dict(out.get("defaults") or {}), DefaultsConfig)
    server = dict(out.get("server") or {})
    server["media"] = _documented(dict(server.get("media") or {}), MediaLimits)
    out["server"] = _documented(server, ServerConfig)
    out["distributed"] = _documented(dict(out.get("distributed") or {}), DistributedConfig)
    models = dict(out.get("models") or {})
    documented = _documented({}, ModelSettings, add_missing=False)
    for model_id, entry in models.items():
        if not model_id.startswith("_") and isinstance(entry, dict):
            documented[model_id] = {k: v for k, v in _documented(entry, ModelSettings).items() if k != "_help"}
    out["models"] = documented
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema of config.json (keys starting with '_' are comments; unknown keys are allowed, as the
    server only warns about them)."""
    schema = Settings.model_json_schema()
    schema.pop("title", None)
    schema["properties"] = {"$schema": {"type": "string"}, **schema["properties"]}
    return {"$schema": SCHEMA_DIALECT, "title": "mlx-router config.json", **schema}


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def generated(repo: Path = REPO) -> dict[Path, str]:
    """What each generated file should hold, by path."""
    readme, config = repo / README, repo / CONFIG
    return {
        readme: update_readme(readme.read_text(encoding="utf-8")),
        config: _json(update_config(json.loads(config.read_text(encoding="utf-8")))),
        repo / SCHEMA: _json(json_schema()),
    }


def stale(repo: Path = REPO) -> list[Path]:
    """The generated files whose content differs from what the settings make of them."""
    return [p for p, text in generated(repo).items() if not p.exists() or p.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlx_router.config.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the files that are stale")
    parser.add_argument("--check", action="store_true", help="exit 1 if any file is stale (the default)")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout (default: the one holding this module)")
    args = parser.parse_args(argv)
    outdated = stale(args.repo)
    if args.write:
        texts = generated(args.repo)
        for path in outdated:
            path.write_text(texts[path], encoding="utf-8")
            print(f"wrote {path}")
        return 0
    for path in outdated:
        print(f"{path} is stale: run python -m mlx_router.config.docs --write", file=sys.stderr)
    return 1 if outdated else 0


if __name__ == "__main__":
    sys.exit(main())
