"""`mlx-router service status` where the service manager cannot be asked (no systemd user bus in a container or
an SSH session, no launchctl, no systemctl): it still reports the unit file and the server's health over HTTP.

The service managers are stand-in scripts on PATH; the server is a stand-in on 127.0.0.1 answering /v1/health.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mlx_router import cli as router_cli
from mlx_router.service import status as service_status
from mlx_router.service.systemd import unit_path

NO_BUS = "Failed to connect to bus: No medium found"
HEALTH = {
    "status": "ok",
    "version": "3.0.0.dev0",
    "models": [{"id": "mlx-router-demo", "state": "ready"}],
    "requests_in_flight": 2,
    "memory": {"pressure": "normal"},
}


class _Health(BaseHTTPRequestHandler):
    key: str | None = None
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
        if self.key and self.headers.get("Authorization") != f"Bearer {self.key}":
            self._send(401, {"error": {"message": "bad key", "type": "authentication_error"}})
        elif self.path == "/v1/health":
            self._send(200, HEALTH)
        else:
            self._send(404, {})

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {"key": None, "seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], handler
    httpd.shutdown()
    httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> Path:
    """A PATH holding only the given commands (name -> shell script body)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, body in scripts.items():
        script = folder / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    return folder


def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: int, installed: bool, **server: Any) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    if installed:
        unit_path(home).parent.mkdir(parents=True)
        unit_path(home).write_text("[Unit]\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"server": {"ip": "0.0.0.0", "port": port, **server}}))
    return config


def status(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = router_cli.main(["service", "status", *argv])
    return code, capsys.readouterr().out.splitlines()


def test_no_user_bus_still_reports_the_unit_file_and_health(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    server: tuple[int, type[_Health]],
) -> None:
    port, handler = server
    handler.key = "sk-test"
    config = setup(tmp_path, monkeypatch, port, installed=True, api_keys=["sk-test"])
    fake_bin(tmp_path, monkeypatch, systemctl=f'echo "{NO_BUS}" >&2; exit 1')
    code, out = status(["--platform", "systemd", "--config", str(config)], capsys)
    assert code == 0  # the server is up, which is what a status check wants to know
    assert out[0] == f"service file: {unit_path(tmp_path / 'home')} (present)"
    assert out[1] == (
        f"health:       http://127.0.0.1:{port}/v1/health: ok; version 3.0.0.dev0; models: mlx-router-demo (ready); "
        "2 request(s) in flight; memory pressure normal"
    )
    assert out[2] == "$ systemctl --user status --no-pager --lines=20 mlx-router.service"
    assert out[3] == NO_BUS
    assert out[4].startswith(f"systemctl --user could not be asked (exit status 1: {NO_BUS}): no systemd user")
    assert handler.seen == [{"path": "/v1/health", "auth": "Bearer sk-test"}]  # with the configured key


def test_no_user_bus_and_no_server_is_not_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = setup(tmp_path, monkeypatch, port, installed=False)
    fake_bin(tmp_path, monkeypatch, systemctl=f'echo "{NO_BUS}" >&2; exit 1')
    code, out = status(["--platform", "systemd", "--config", str(config)], capsys)
    assert code == 3
    assert out[0].endswith("(not installed)")
    assert out[1] == f"health:       http://127.0.0.1:{port}/v1/health: not reachable (connection refused)"
    assert "could not be asked" in out[-1]


def test_without_systemctl_at_all(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    server: tuple[int, type[_Health]],
) -> None:
    port, _ = server
    config = setup(tmp_path, monkeypatch, port, installed=True)
    fake_bin(tmp_path, monkeypatch)  # an empty PATH: as in a slim container
    code, out = status(["--platform", "systemd", "--config", str(config)], capsys)
    assert code == 0
    assert out[1].endswith(
        "/v1/health: ok; version 3.0.0.dev0; models: mlx-router-demo (ready); "
        "2 request(s) in flight; memory pressure normal"
    )
    assert out[3] == "systemctl: command not found"
    assert out[4].startswith("systemctl --user could not be asked (exit status 127: systemctl: command not found)")


def test_a_wrong_key_is_reported_not_hidden(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    server: tuple[int, type[_Health]],
) -> None:
    port, handler = server
    handler.key = "sk-right"
    config = setup(tmp_path, monkeypatch, port, installed=True, api_keys=["sk-wrong"])
    fake_bin(tmp_path, monkeypatch, systemctl=f'echo "{NO_BUS}" >&2; exit 1')
    code, out = status(["--platform", "systemd", "--config", str(config)], capsys)
    assert code == 3
    assert out[1].endswith("/v1/health: the server answered HTTP 401")


def test_when_the_manager_answers_its_status_is_the_answer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    server: tuple[int, type[_Health]],
) -> None:
    port, _ = server
    config = setup(tmp_path, monkeypatch, port, installed=True)
    fake_bin(tmp_path, monkeypatch, systemctl='echo "mlx-router.service - inactive (dead)"; exit 3')
    code, out = status(["--platform", "systemd", "--config", str(config)], capsys)
    assert code == 3
    assert out[3] == "mlx-router.service - inactive (dead)"
    assert not any("could not be asked" in line for line in out)


def test_launchd_outside_a_gui_session(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    server: tuple[int, type[_Health]],
) -> None:
    port, _ = server
    config = setup(tmp_path, monkeypatch, port, installed=False)
    fake_bin(tmp_path, monkeypatch, launchctl='echo "Bad request. Could not find domain for port identifier."; exit 5')
    code, out = status(["--platform", "launchd", "--config", str(config)], capsys)
    assert code == 0
    assert out[0].endswith("com.mlx-router.server.plist (not installed)")
    assert "/v1/health: ok;" in out[1]
    assert out[-1].startswith("launchctl could not be asked (exit status 5: Bad request.")


def test_an_unreadable_config_falls_back_to_the_default_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    fake_bin(tmp_path, monkeypatch, systemctl=f'echo "{NO_BUS}" >&2; exit 1')
    code, out = status(["--platform", "systemd", "--config", str(tmp_path / "missing.json")], capsys)
    assert out[1] == f"config:       {tmp_path / 'missing.json'}: file not found; using the default address"
    assert out[2].startswith("health:       http://127.0.0.1:8800/v1/health: ")
    assert code in (0, 3)  # whatever may listen on 8800 here


@pytest.mark.parametrize(
    ("ip", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:1/v1/health"),
        ("::", "http://[::1]:1/v1/health"),
        ("10.0.0.5", "http://10.0.0.5:1/v1/health"),
    ],
)
def test_health_url_reaches_a_wildcard_bind_on_loopback(ip: str, url: str) -> None:
    from mlx_router.config.settings import Settings

    settings = Settings.model_validate({"server": {"ip": ip, "port": 1}})
    assert service_status.health_url(settings) == url
