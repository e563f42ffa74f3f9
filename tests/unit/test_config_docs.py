"""The configuration's docs come from one source (the pydantic settings): README's key tables, config.json's
`_help` objects and config.schema.json are what `python -m mlx_router.config.docs --write` makes of them, and
this fails while any of them differs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from mlx_router.config import docs
from mlx_router.config.settings import DefaultsConfig, ModelSettings, ServerConfig, load_settings
from mlx_router.vision.limits import MediaLimits

REPO = Path(__file__).resolve().parents[2]


def test_readme_config_json_and_schema_are_generated_from_the_settings() -> None:
    assert docs.stale(REPO) == [], "run: python -m mlx_router.config.docs --write"


def test_every_key_is_documented_in_all_three() -> None:
    readme = (REPO / "README.md").read_text()
    config = json.loads((REPO / "config.json").read_text())
    schema = json.loads((REPO / "config.schema.json").read_text())
    sections: dict[str, tuple[type[BaseModel], dict]] = {
        "DefaultsConfig": (DefaultsConfig, config["defaults"]),
        "ServerConfig": (ServerConfig, config["server"]),
        "MediaLimits": (MediaLimits, config["server"]["media"]),
        "ModelSettings": (ModelSettings, config["models"]),
    }
    for name, (model, section) in sections.items():
        for key, field in model.model_fields.items():
            assert field.description, f"{name}.{key}"
            assert section["_help"][key] == field.description
            assert schema["$defs"][name]["properties"][key]["description"] == field.description
            text = field.description.replace("|", "\\|")
            assert f"| `{key}` | {docs.default_text(field)} | {text} |" in readme


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for name in (docs.README, docs.CONFIG, docs.SCHEMA):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def test_a_stale_file_is_named_and_rewritten(checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = checkout / docs.README
    readme.write_text(readme.read_text().replace("| TCP port. |", "| the port |"))
    config = json.loads((checkout / docs.CONFIG).read_text())
    del config["defaults"]["timeout"]  # a key missing from the example
    config["server"]["_help"]["port"] = "old text"
    (checkout / docs.CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (checkout / docs.SCHEMA).unlink()
    assert sorted(p.name for p in docs.stale(checkout)) == sorted([docs.README, docs.CONFIG, docs.SCHEMA])
    assert docs.main(["--check", "--repo", str(checkout)]) == 1
    assert "is stale" in capsys.readouterr().err
    assert docs.main(["--write", "--repo", str(checkout)]) == 0
    assert docs.stale(checkout) == []
    for name in (docs.README, docs.CONFIG, docs.SCHEMA):
        assert (checkout / name).read_text() == (REPO / name).read_text()
    assert json.loads((checkout / docs.CONFIG).read_text())["defaults"]["timeout"] == 300.0


def test_a_key_without_a_description_is_refused() -> None:
    class Undocumented(DefaultsConfig):
        new_key: int = Field(1)

    section = docs.Section("defaults", Undocumented, ("defaults",))
    with pytest.raises(ValueError, match="defaults.new_key has no description"):
        docs.readme_table(section)


def test_config_json_loads_without_warnings_and_matches_its_schema(caplog: pytest.LogCaptureFixture) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    settings = load_settings(REPO / "config.json", env={})
    assert caplog.records == []  # "$schema" and "_help" are not unknown keys
    assert settings.defaults.max_tokens == 4096
    config = json.loads((REPO / "config.json").read_text())
    schema = json.loads((REPO / "config.schema.json").read_text())
    assert config["$schema"] == "./config.schema.json"
    jsonschema.validate(config, schema)
    config["defaults"]["timeout"] = "soon"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)
