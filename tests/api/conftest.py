"""API tier: the app in process (Starlette's TestClient runs its lifespan), with the tiny test models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlx_router.app import create_app
from mlx_router.config.settings import parse_settings


def make_settings(models_root: Path, **defaults: object):
    d = {"model_directory": str(models_root), "scan_hf_cache": False, "max_tokens": 32}
    d.update(defaults)
    return parse_settings({"defaults": d})


@pytest.fixture(scope="module")
def app_client(models_root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(models_root))) as client:
        yield client
