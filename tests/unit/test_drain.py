"""The shutdown drain's parts (issue 20, item 4): the gate's refusals, the wait and the abort, and which signal
does what. The whole path through a real server process is in tests/e2e/test_shutdown.py."""

from __future__ import annotations

import asyncio
import json
import signal
from types import SimpleNamespace
from typing import Any

import uvicorn

from mlx_router.api.drain import RequestGate, RequestGateMiddleware, drain
from mlx_router.errors import RouterError
from mlx_router.server import DrainingServer


async def _call(mw: RequestGateMiddleware, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await mw({"type": "http", "path": path, "method": "POST"}, receive, send)
    return sent


async def _ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_closed_gate_refuses_with_503_retry_after_and_closes_the_connection_but_not_health() -> None:
    gate = RequestGate()
    mw = RequestGateMiddleware(_ok_app, gate)
    assert asyncio.run(_call(mw, "/v1/chat/completions"))[0]["status"] == 200
    gate.closed = True
    start, body = asyncio.run(_call(mw, "/v1/chat/completions"))
    headers = dict(start["headers"])
    assert start["status"] == 503 and int(headers[b"retry-after"]) >= 1 and headers[b"connection"] == b"close"
    assert json.loads(body["body"])["error"]["code"] == "server_shutting_down"
    assert asyncio.run(_call(mw, "/v1/health"))[0]["status"] == 200
    assert gate.active == 0


class _Client:
    def __init__(self) -> None:
        self.aborted: list[RouterError] = []

    def abort(self, error: RouterError) -> None:
        self.aborted.append(error)


def _app(gate: RequestGate, client: _Client) -> Any:
    return SimpleNamespace(state=SimpleNamespace(gate=gate, services=SimpleNamespace(client=client)))


def test_drain_waits_for_running_requests_and_aborts_only_what_outlives_it() -> None:
    async def main() -> None:
        gate, client = RequestGate(), _Client()
        gate.enter()
        asyncio.get_running_loop().call_later(0.05, gate.leave)
        await drain(_app(gate, client), 2.0)
        assert gate.closed and client.aborted == []  # it finished in time

        gate, client = RequestGate(), _Client()
        gate.enter()
        t0 = asyncio.get_running_loop().time()
        asyncio.get_running_loop().call_later(0.3, gate.leave)  # ends once aborted
        await drain(_app(gate, client), 0.1)
        assert [e.code for e in client.aborted] == ["server_shutting_down"]
        assert client.aborted[0].status == 503
        assert asyncio.get_running_loop().time() - t0 < 1.0

        gate, client, hurry = RequestGate(), _Client(), asyncio.Event()
        gate.enter()
        asyncio.get_running_loop().call_later(0.05, hurry.set)
        t0 = asyncio.get_running_loop().time()
        asyncio.get_running_loop().call_later(0.2, gate.leave)
        await drain(_app(gate, client), 30.0, hurry)  # a second signal: no 30 s wait
        assert client.aborted and asyncio.get_running_loop().time() - t0 < 1.0

    asyncio.run(main())


def test_signals_drain_first_then_hurry_then_force() -> None:
    def server() -> DrainingServer:
        async def no_drain(seconds: float, hurry: asyncio.Event) -> None:
            return None

        return DrainingServer(uvicorn.Config(_ok_app), no_drain, drain_seconds=7.0)

    s = server()
    s.handle_exit(signal.SIGTERM, None)
    assert s._drain_for == 7.0 and not s.should_exit  # uvicorn keeps listening: new requests get 503
    s.handle_exit(signal.SIGTERM, None)
    assert s._hurry_asked and not s.should_exit
    s.handle_exit(signal.SIGTERM, None)
    assert s.should_exit
    s = server()
    s.handle_exit(signal.SIGINT, None)
    assert s._drain_for == 0.0 and not s.should_exit  # Ctrl-C: running requests end with their error at once
