"""A streamed session ends however its response ends, even when the body never starts."""

from __future__ import annotations

import asyncio

from mlx_router.api.responses import stream_response
from mlx_router.config.settings import DefaultsConfig


class FakeSession:
    def __init__(self) -> None:
        self.entered = 0
        self.exited = 0

    async def __aenter__(self) -> FakeSession:
        self.entered += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.exited += 1


async def _chunks():
    yield '{"x":1}'


def test_a_client_gone_before_the_body_starts_still_ends_the_session():
    session = FakeSession()

    async def run() -> None:
        response = await stream_response(session, _chunks, DefaultsConfig())  # type: ignore[arg-type]

        async def send(message: dict) -> None:
            raise OSError("client gone")  # uvicorn's send once the connection closed

        async def receive() -> dict:
            return {"type": "http.disconnect"}

        scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
        try:
            await response(scope, receive, send)
        except Exception:  # starlette turns the OSError into ClientDisconnect
            pass

    asyncio.run(run())
    assert session.entered == 1
    assert session.exited >= 1


def test_a_finished_stream_ends_the_session():
    session = FakeSession()
    sent: list[dict] = []

    async def run() -> None:
        response = await stream_response(session, _chunks, DefaultsConfig())  # type: ignore[arg-type]

        async def send(message: dict) -> None:
            sent.append(message)

        async def receive() -> dict:
            await asyncio.sleep(10)
            return {"type": "http.disconnect"}

        await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)

    asyncio.run(run())
    assert session.exited >= 1
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert body == b'data: {"x":1}\n\ndata: [DONE]\n\n'
