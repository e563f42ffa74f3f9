"""HTTP hardening through a real uvicorn process: connections beyond `server.max_connections` get a fast 503
(not a reset), request heads that do not arrive in `server.request_head_timeout` are closed, keep-alive
connections still idle between requests, a chunked body over the limit is a 413, and a foreign Host is a 421."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import base_config
from tests.server_process import RouterServer

pytestmark = pytest.mark.e2e

MAX_CONNECTIONS = 4
HEAD_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def bounded(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterServer]:
    config = base_config(models_root)
    config["server"] = {
        "max_connections": MAX_CONNECTIONS,
        "request_head_timeout": HEAD_TIMEOUT,
        "max_body_mb": 0.01,
    }
    with RouterServer(tmp_path_factory.mktemp("bounded"), config) as srv:
        yield srv


def connect(server: RouterServer) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return s


def request(s: socket.socket, path: str = "/health", host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    response = http.client.HTTPResponse(s)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def closed_within(s: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closes `s` within `seconds`, and what it sent before."""
    s.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def test_connections_beyond_the_limit_get_a_fast_503(bounded: RouterServer) -> None:
    idle = [connect(bounded) for _ in range(MAX_CONNECTIONS + 300)]  # the first MAX_CONNECTIONS take the slots
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        r = httpx.get(bounded.base_url + "/v1/models", timeout=5)
        assert time.monotonic() - t0 < 1.0
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1" and r.headers["connection"] == "close"
        assert r.json()["error"]["code"] == "too_many_connections"
        # the idle ones send no request head: closed after the head timeout, which frees the slots
        for s in idle[:MAX_CONNECTIONS]:
            assert closed_within(s, HEAD_TIMEOUT + 3) == (True, b"")
    finally:
        for s in idle:
            s.close()
    time.sleep(0.2)
    assert httpx.get(bounded.base_url + "/v1/models", timeout=5).status_code == 200


def test_a_half_sent_head_is_closed_with_408(bounded: RouterServer) -> None:
    with connect(bounded) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        t0 = time.monotonic()
        closed, received = closed_within(s, HEAD_TIMEOUT + 3)
        assert closed, "the server still waits for the rest of the head"
        assert HEAD_TIMEOUT - 0.5 < time.monotonic() - t0 < HEAD_TIMEOUT + 3
        assert received.startswith(b"HTTP/1.1 408 ")
        assert json.loads(received.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"


def test_keep_alive_connections_idle_between_requests(bounded: RouterServer) -> None:
    """The head clock runs from a request's first byte: a pooled connection may idle longer than it."""
    with connect(bounded) as s:
        assert request(s)[0] == 200
        time.sleep(HEAD_TIMEOUT + 1)
        assert request(s)[0] == 200
        # a head sent slowly but within the timeout is served
        for part in (b"GET /health HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
            s.sendall(part)
            time.sleep(HEAD_TIMEOUT / 4)
        response = http.client.HTTPResponse(s)
        response.begin()
        assert response.status == 200


def test_a_chunked_body_over_the_limit_is_413(bounded: RouterServer) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"model": "tiny-a", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}]}'

    r = httpx.post(bounded.base_url + "/v1/chat/completions", content=body(), timeout=30)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "request_too_large"


def test_a_foreign_host_is_421(bounded: RouterServer) -> None:
    with connect(bounded) as s:
        status, _, payload = request(s, "/v1/models", host="rebound.example:8800")
        assert status == 421
        assert json.loads(payload)["error"]["code"] == "host_not_allowed"
    with connect(bounded) as s:
        assert request(s, "/v1/models", host=f"localhost:{bounded.port}")[0] == 200
