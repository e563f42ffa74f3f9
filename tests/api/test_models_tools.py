"""`mlx-router models list` lists what the server's /v1/models lists, for the same config file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlx_router import cli as router_cli
from mlx_router.app import create_app
from mlx_router.config.settings import load_settings


def test_models_list_matches_the_servers_model_list(
    tmp_path: Path, models_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = tmp_path / "hub"
    snapshot = hub / "models--org--cached" / "snapshots" / "abc"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(models_root / "tiny-a", target_is_directory=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MLX_MODEL_DIR", raising=False)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"defaults": {"model_directory": str(models_root), "engine_process": False}}))

    assert router_cli.main(["models", "list", "--json", "--config", str(config)]) == 0
    listed = sorted(row["id"] for row in json.loads(capsys.readouterr().out))
    with TestClient(create_app(load_settings(config))) as client:
        served = sorted(m["id"] for m in client.get("/v1/models").json()["data"])
    assert "org/cached" in served and "tiny-a" in served
    assert listed == served
