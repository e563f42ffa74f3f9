"""End-to-end fixtures: real server processes over the tiny test models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_process import RouterServer

pytestmark = pytest.mark.e2e


def base_config(models_root: Path, **defaults: object) -> dict:
    d = {"model_directory": str(models_root), "scan_hf_cache": False, "max_tokens": 64, "timeout": 60}
    d.update(defaults)
    return {"defaults": d, "server": {}, "models": {}}


@pytest.fixture(scope="session")
def server(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterServer]:
    """One shared server over every test model, with default settings."""
    with RouterServer(tmp_path_factory.mktemp("server"), base_config(models_root)) as srv:
        yield srv


@pytest.fixture(scope="session")
def client(server: RouterServer):  # noqa: ANN201 - an openai.OpenAI
    return server.openai()
