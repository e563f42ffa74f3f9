"""A model folder whose config.json no installed loader understands is decided on at discovery: it is not in
/v1/models, and a request for it is a 404 that says why (before: listed, then a 500 when asked for)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlx_router.app import create_app
from mlx_router.config.settings import parse_settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, random_llm_dir: Path) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("models")
    (root / "tiny-a").symlink_to(random_llm_dir, target_is_directory=True)
    odd = root / "odd"  # a real model's files under a model_type that neither mlx-lm nor mlx-vlm has
    shutil.copytree(random_llm_dir.resolve(), odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "model_type": "no_such_architecture"}))
    settings = parse_settings({"defaults": {"model_directory": str(root), "scan_hf_cache": False, "max_tokens": 4}})
    with TestClient(create_app(settings)) as c:
        yield c


def test_it_is_not_listed(client: TestClient) -> None:
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["tiny-a"]
    assert client.get("/v1/models/odd").status_code == 404


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_for_it_is_a_404_that_says_why(client: TestClient, stream: bool) -> None:
    body = {"model": "odd", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "'no_such_architecture' is not supported by mlx-lm" in error["message"]
    assert str(Path.home()) not in error["message"] and "/" not in error["message"]  # no folder paths
    r = client.post("/v1/completions", json={"model": "odd", "prompt": "hi", "stream": stream})
    assert r.status_code == 404 and "not supported by mlx-lm" in r.json()["error"]["message"]
    ok = {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    assert client.post("/v1/chat/completions", json=ok).status_code == 200
