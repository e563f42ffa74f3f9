"""EngineClient across an engine's death (issue 20, item 2): nothing sent to a dead engine is dropped silently.

A fake transport plays the engine: it answers `load` calls and reports; `die()` closes its pipe the way a SIGKILL
does (sends fail) without telling the client, as the reader thread notices only a moment later."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlx_router.config.discovery import ModelEntry
from mlx_router.config.settings import Settings
from mlx_router.engine import client as client_module
from mlx_router.engine.client import EngineClient
from mlx_router.engine.commands import EngineReport, LoadModel
from mlx_router.engine.params import GenerationRequest
from mlx_router.engine.wire import Message
from mlx_router.errors import ModelUnloadedError, RouterError, ServiceUnavailableError

LOAD = LoadModel(ModelEntry("tiny", Path("/nonexistent/tiny"), 0, 0, "directory"))
WAIT = 5.0  # a hang fails the test after this


class FakeEngine:
    """A transport whose engine answers at once; `die()` makes sends fail, `exit()` reports the exit."""

    started: list[FakeEngine]

    def __init__(self, deliver: Callable[[Message], None], on_exit: Callable[[int | None], None], starts: bool):
        self._deliver = deliver
        self._on_exit = on_exit
        self._starts = starts
        self.dead = False
        self.received: list[Message] = []

    def start(self) -> None:
        if self._starts:
            self._deliver(("report", EngineReport(models={})))
        else:  # dies while importing MLX
            self.dead = True
            self._on_exit(1)

    def send(self, msg: Message) -> bool:
        if self.dead:
            return False
        self.received.append(msg)
        if msg[0] == "call":
            self._deliver(("reply", msg[1], True, f"{type(msg[2]).__name__} done"))
        return True

    def die(self) -> None:
        self.dead = True

    def exit(self) -> None:
        self.dead = True
        self._on_exit(-9)

    def stop(self) -> None:
        self.dead = True

    @property
    def alive(self) -> bool:
        return not self.dead

    @property
    def pid(self) -> int | None:
        return None


def make_client(loop: asyncio.AbstractEventLoop, starts: list[bool] | None = None) -> tuple[EngineClient, list]:
    """A started client; `starts[i]` says whether the i-th engine after the first comes up."""
    engines: list[FakeEngine] = []
    plan = list(starts or [])

    def factory(settings: Settings, deliver: Any, on_exit: Any) -> FakeEngine:
        ok = plan.pop(0) if engines and plan else True
        engine = FakeEngine(deliver, on_exit, ok)
        engines.append(engine)
        return engine

    client = EngineClient(Settings(), loop, transport_factory=factory)
    client.start()
    return client, engines


@pytest.fixture(autouse=True)
def quick_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "RESTART_DELAY", 0.01)


def req(request_id: str) -> GenerationRequest:
    return GenerationRequest(request_id=request_id, model_id="m", prompt_tokens=[1], max_tokens=1)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, WAIT))


def test_a_command_sent_to_a_dead_engine_before_its_exit_is_seen_goes_to_the_next_one() -> None:
    async def main() -> None:
        client, engines = make_client(asyncio.get_running_loop())
        await client.ready()
        engines[0].die()  # the pipe is closed; the reader has not reported the exit yet
        assert await client.call(LOAD) == "LoadModel done"
        assert len(engines) == 2 and engines[1].received[0][2] == LOAD
        assert client.restarts == 1 and client.state == "running"
        engines[0].exit()  # the old reader's late report changes nothing
        await asyncio.sleep(0.05)
        assert len(engines) == 2 and client.restarts == 1

    run(main())


def test_a_command_issued_while_the_engine_restarts_waits_for_the_new_one() -> None:
    async def main() -> None:
        client, engines = make_client(asyncio.get_running_loop())
        await client.ready()
        engines[0].exit()
        await asyncio.sleep(0)  # the exit is handled; the new engine starts RESTART_DELAY later
        assert client.state == "restarting"
        pending = asyncio.ensure_future(client.call(LOAD))
        await asyncio.sleep(0)
        assert client.waiting == 1
        assert await pending == "LoadModel done"
        assert client.waiting == 0 and engines[1].received

    run(main())


def test_commands_in_flight_when_the_engine_dies_fail_with_a_retryable_error() -> None:
    async def main() -> None:
        client, engines = make_client(asyncio.get_running_loop())
        await client.ready()
        engines[0].send = lambda msg: True  # type: ignore[method-assign]  # delivered, never answered
        pending = asyncio.ensure_future(client.call(LOAD))
        await asyncio.sleep(0)
        engines[0].exit()
        with pytest.raises(ModelUnloadedError) as e:
            await pending
        assert e.value.headers["Retry-After"] == "2"

    run(main())


def test_a_generation_opened_on_a_dead_pipe_gets_an_error_event_at_once() -> None:
    async def main() -> None:
        client, engines = make_client(asyncio.get_running_loop())
        await client.ready()
        engines[0].die()
        queue = client.open("m", req("r1"))
        event = queue.get_nowait()
        assert event.finish_reason == "error" and isinstance(event.error, ModelUnloadedError)
        # and one opened while the engine restarts, too (its model went with the old engine)
        queue = client.open("m", req("r2"))
        assert isinstance(queue.get_nowait().error, ModelUnloadedError)

    run(main())


def test_waiters_for_an_engine_that_fails_to_start_are_refused_at_once_and_a_later_engine_serves() -> None:
    async def main() -> None:
        client, engines = make_client(asyncio.get_running_loop(), starts=[False, True])
        await client.ready()
        engines[0].exit()
        with pytest.raises(ServiceUnavailableError) as e:
            await client.call(LOAD)  # waits for engine 2, which dies while starting
        assert int(e.value.headers["Retry-After"]) >= 1
        assert client.state == "failed"
        with pytest.raises(ServiceUnavailableError):
            await client.call(LOAD)  # refused at once until the next attempt
        await asyncio.sleep(0.1)  # the next attempt, after a longer delay
        assert await client.call(LOAD) == "LoadModel done" and len(engines) == 3

    run(main())


def test_abort_fails_what_is_in_flight_and_everything_after_it() -> None:
    async def main() -> None:
        client, engines = make_client(asyncio.get_running_loop())
        await client.ready()
        engines[0].send = lambda msg: True  # type: ignore[method-assign]  # never answered
        pending = asyncio.ensure_future(client.call(LOAD))
        queue = client.open("m", req("r1"))
        await asyncio.sleep(0)
        error = ServiceUnavailableError("shutting down", retry_after=5)
        client.abort(error)
        with pytest.raises(RouterError) as e:
            await pending
        assert e.value is error
        assert queue.get_nowait().error is error
        with pytest.raises(ServiceUnavailableError):
            await client.call(LOAD)
        assert client.open("m", req("r2")).get_nowait().error
        assert client.state == "stopped"

    run(main())
