"""`mlx-router service status`: what can be known of the service, with or without a service manager to ask.

The service manager (`systemctl --user`, `launchctl`) is asked first; where it cannot answer (no systemd user
bus in a container or an SSH session without a login session, no launchd GUI domain, no such command), the
unit file's presence and the server's own health over HTTP still say whether the service is installed and up.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlx_router.config.settings import Settings

# Exit statuses by which a service manager answers about the service (running, stopped, unknown unit);
# anything else means it could not be asked. systemctl: LSB status codes; launchctl print: 113 = no such service.
ANSWERS = {"systemd": frozenset({0, 3, 4}), "launchd": frozenset({0, 113})}
NOT_RUNNING = 3  # LSB "program is not running": the exit status when only the health check could answer
MANAGER_TIMEOUT = 15.0
HEALTH_TIMEOUT = 3.0


@dataclass(frozen=True)
class ManagerAnswer:
    """What the service manager said: its exit status (127: not installed, 124: timed out) and output."""

    status: int
    output: str
    answered: bool  # False: it could not be asked (no bus, no such command, ...)


@dataclass(frozen=True)
class Health:
    """What the server said over HTTP."""

    url: str
    up: bool  # it answered, and said ok
    summary: str


def ask_manager(argv: Sequence[str], platform: str, timeout: float = MANAGER_TIMEOUT) -> ManagerAnswer:
    """Run the manager's status command with its output captured (stderr with stdout)."""
    try:
        done = subprocess.run(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        return ManagerAnswer(127, f"{argv[0]}: command not found", answered=False)
    except subprocess.TimeoutExpired:
        return ManagerAnswer(124, f"{argv[0]} did not answer within {timeout:g} s", answered=False)
    return ManagerAnswer(done.returncode, done.stdout, answered=done.returncode in ANSWERS[platform])


def health_url(settings: Settings) -> str:
    """The server's /v1/health as reached from this machine (a wildcard bind address means loopback)."""
    host = settings.server.ip
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}/v1/health"


def probe_health(settings: Settings, timeout: float = HEALTH_TIMEOUT) -> Health:
    """GET /v1/health (with the first API key when keys are set) and sum the answer up in one line."""
    url = health_url(settings)
    headers = {"Authorization": f"Bearer {settings.server.api_keys[0]}"} if settings.server.api_keys else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            body = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        return Health(url, False, f"the server answered HTTP {e.code}")
    except urllib.error.URLError as e:
        return Health(url, False, f"not reachable ({_reason(e.reason)})")
    except (OSError, ValueError) as e:  # a reset, a timeout, a body that is not JSON
        return Health(url, False, f"no usable answer ({_reason(e)})")
    if not isinstance(body, dict):
        return Health(url, False, "no usable answer (not a JSON object)")
    return Health(url, body.get("status") == "ok", summarize(body))


def summarize(body: dict[str, Any]) -> str:
    """One line from a /v1/health answer: status, version, models and their states, requests, pressure."""
    parts = [str(body.get("status", "?"))]
    if body.get("version"):
        parts.append(f"version {body['version']}")
    models = [m for m in body.get("models") or [] if isinstance(m, dict)]
    if models:
        parts.append("models: " + ", ".join(f"{m.get('id')} ({m.get('state')})" for m in models))
    else:
        parts.append("no model loaded")
    if "requests_in_flight" in body:
        parts.append(f"{body['requests_in_flight']} request(s) in flight")
    memory = body.get("memory")
    if isinstance(memory, dict) and memory.get("pressure"):
        parts.append(f"memory pressure {memory['pressure']}")
    return "; ".join(parts)


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def no_manager_note(platform: str, answer: ManagerAnswer) -> str:
    """Why the manager could not answer, and what the lines above still tell."""
    first = next((line.strip() for line in answer.output.splitlines() if line.strip()), "")
    said = f": {first}" if first else ""
    if platform == "systemd":
        why = (
            "no systemd user instance is reachable here (a container, or an SSH session without a login "
            "session: `loginctl enable-linger $USER` and log in again)"
        )
        name = "systemctl --user"
    else:
        why = "launchd has no GUI domain for this user in this session (the service runs while you are logged in)"
        name = "launchctl"
    return (
        f"{name} could not be asked (exit status {answer.status}{said}): {why}; "
        "the service file and health lines above are what can be known without it"
    )
