"""HTTP edges in process: a chunked body over the size limit is a 413 like one with a Content-Length, and the
Host header check that stops DNS rebinding (a request arriving on a loopback address must name a loopback host
or one in `server.allowed_hosts`, else 421)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlx_router.app import create_app
from mlx_router.config.settings import parse_settings

CHAT = "/v1/chat/completions"
LIMIT_MB = 0.01  # 10,485 bytes


def _app(models_root: Path, **server: object):
    d = {"model_directory": str(models_root), "scan_hf_cache": False, "max_tokens": 4}
    return create_app(parse_settings({"defaults": d, "server": {"max_body_mb": LIMIT_MB, **server}}))


@pytest.fixture(scope="module")
def loopback(models_root: Path) -> Iterator[TestClient]:
    """The app as reached on 127.0.0.1 (the scope's server address), default settings otherwise."""
    with TestClient(_app(models_root), base_url="http://127.0.0.1:8800") as client:
        yield client


def chunks(size: int, piece: int = 1000) -> Iterator[bytes]:
    body = b'{"model": "tiny-a", "messages": [{"role": "user", "content": "' + b"x" * size + b'"}]}'
    for i in range(0, len(body), piece):
        yield body[i : i + piece]


def test_chunked_body_over_the_limit_is_413(loopback: TestClient) -> None:
    r = loopback.post(CHAT, content=chunks(20_000), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "request_too_large"


def test_sized_body_over_the_limit_is_413(loopback: TestClient) -> None:
    r = loopback.post(CHAT, content=b"".join(chunks(20_000)), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_chunked_body_under_the_limit_is_served(loopback: TestClient) -> None:
    r = loopback.post(CHAT, content=chunks(2_000, piece=300), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize("host", ["127.0.0.1:8800", "localhost:8800", "localhost", "[::1]:8800", "app.localhost"])
def test_loopback_host_names_are_served(loopback: TestClient, host: str) -> None:
    assert loopback.get("/v1/models", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["attacker.example:8800", "attacker.example", "192.168.1.5:8800", "127.0.0.1.nip.io"])
def test_other_host_names_are_421_on_loopback(loopback: TestClient, host: str) -> None:
    for method, path in (("GET", "/v1/models"), ("POST", CHAT), ("POST", "/v1/models/tiny-a/load"), ("GET", "/health")):
        r = loopback.request(method, path, headers={"host": host}, json={})
        assert r.status_code == 421, (method, path, r.text)
        err = r.json()["error"]
        assert err["code"] == "host_not_allowed" and "allowed_hosts" in err["message"]


def test_allowed_hosts_extend_the_loopback_names(models_root: Path) -> None:
    app = _app(models_root, allowed_hosts=["mybox.lan", "*.corp.example"])
    with TestClient(app, base_url="http://127.0.0.1:8800") as client:
        for host in ("mybox.lan:8800", "MyBox.lan", "a.corp.example", "localhost"):
            assert client.get("/v1/models", headers={"host": host}).status_code == 200, host
        assert client.get("/v1/models", headers={"host": "corp.example.evil"}).status_code == 421
    # with a list, requests on other addresses are checked too
    with TestClient(app, base_url="http://192.168.1.5:8800") as client:
        assert client.get("/v1/models", headers={"host": "mybox.lan"}).status_code == 200
        assert client.get("/v1/models", headers={"host": "other.example"}).status_code == 421


def test_any_host_on_a_network_address_without_a_list(models_root: Path) -> None:
    with TestClient(_app(models_root), base_url="http://192.168.1.5:8800") as client:
        assert client.get("/v1/models", headers={"host": "whatever.example"}).status_code == 200


def test_star_accepts_any_host(models_root: Path) -> None:
    with TestClient(_app(models_root, allowed_hosts=["*"]), base_url="http://127.0.0.1:8800") as client:
        assert client.get("/v1/models", headers={"host": "attacker.example"}).status_code == 200
