"""GET /metrics with API keys set: it needs the key like every route, unless `server.metrics_public`; every
response, a refused one too, carries its request id."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlx_router.app import create_app
from mlx_router.config.settings import parse_settings


@pytest.mark.parametrize("public", [True, False])
def test_metrics_need_the_key_unless_public(models_root: Path, public: bool) -> None:
    settings = parse_settings(
        {
            "defaults": {"model_directory": str(models_root), "scan_hf_cache": False, "engine_process": False},
            "server": {"api_keys": ["k"], "metrics_public": public},
        }
    )
    with TestClient(create_app(settings)) as client:
        anonymous = client.get("/metrics", headers={"X-Request-ID": "scrape-1"})
        assert anonymous.status_code == (200 if public else 401)
        assert anonymous.headers["x-request-id"] == "scrape-1"
        if public:
            assert "mlx_router_engine_running 1.0" in anonymous.text
        assert client.get("/v1/models").status_code == 401  # the other routes keep their key
        keyed = client.get("/metrics", headers={"Authorization": "Bearer k"})
        assert keyed.status_code == 200 and keyed.text.startswith("# HELP mlx_router_")
