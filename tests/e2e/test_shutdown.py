"""SIGTERM (what launchd and systemd send on every restart) loses no request in silence (issue 20, item 4):
new requests get 503 with Retry-After, running ones finish within `server.drain_seconds`, those still running
then end with an error event and [DONE] (streams) or a JSON 503, and the server exits with its engine gone."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import httpx

from tests.e2e.conftest import base_config
from tests.server_process import RouterServer

TOKENS_PER_SECOND = 350  # tiny-a on two busy CPU cores; the long requests below run for several seconds


def body(max_tokens: int, stream: bool) -> dict[str, Any]:
    return {
        "model": "tiny-a",
        "messages": [{"role": "user", "content": "Tell me everything."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


class Running:
    """One stream and one non-stream request of `max_tokens`, running in threads."""

    def __init__(self, srv: RouterServer, max_tokens: int) -> None:
        self.url = srv.base_url + "/v1/chat/completions"
        self.stream: dict[str, Any] = {}
        self.unary: dict[str, Any] = {}
        self.flowing = threading.Event()
        self._threads = [
            threading.Thread(target=self._stream, args=(max_tokens,), daemon=True),
            threading.Thread(target=self._unary, args=(max_tokens,), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _stream(self, max_tokens: int) -> None:
        with httpx.stream("POST", self.url, json=body(max_tokens, True), timeout=60) as r:
            self.stream["status"] = r.status_code
            events = self.stream.setdefault("events", [])
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if '"content"' in line:
                        self.flowing.set()

    def _unary(self, max_tokens: int) -> None:
        r = httpx.post(self.url, json=body(max_tokens, False), timeout=60)
        self.unary.update(status=r.status_code, headers=r.headers, json=r.json())

    def join(self, timeout: float) -> None:
        for t in self._threads:
            t.join(timeout)
            assert not t.is_alive(), "a request did not end"


def start_both(srv: RouterServer, max_tokens: int) -> Running:
    running = Running(srv, max_tokens)
    assert running.flowing.wait(30)
    wait_for(lambda: srv.health()["models"][0]["running"] == 2)
    return running


def test_sigterm_refuses_new_requests_and_lets_running_ones_finish(models_root, tmp_path):
    config = base_config(models_root, timeout=60)
    config["server"]["drain_seconds"] = 60
    srv = RouterServer(tmp_path / "srv", config).start()
    try:
        engine = srv.health()["engine_pid"]
        running = start_both(srv, 4 * TOKENS_PER_SECOND)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: srv.health()["status"] == "draining", timeout=5)
        refused = httpx.post(running.url, json=body(4, False), timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "server_shutting_down"
        assert int(refused.headers["retry-after"]) >= 1
        assert srv.health()["requests_in_flight"] == 2  # still running; the refused one never counted
        running.join(60)
        assert running.unary["status"] == 200
        assert running.unary["json"]["usage"]["completion_tokens"] == 4 * TOKENS_PER_SECOND
        events = running.stream["events"]
        assert events[-1] == "[DONE]" and not any('"error"' in e for e in events)
        assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
        srv.proc.wait(30)
        wait_for(lambda: not alive(engine), timeout=20)
        assert "Traceback" not in srv.log()
    finally:
        srv.stop()


def test_sigterm_ends_what_outlives_the_drain_with_an_error_and_exits(models_root, tmp_path):
    config = base_config(models_root, timeout=60)
    config["server"]["drain_seconds"] = 1
    srv = RouterServer(tmp_path / "srv", config).start()
    try:
        engine = srv.health()["engine_pid"]
        running = start_both(srv, 4000)  # about 12 s of tokens
        assert srv.proc is not None
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        running.join(30)
        ended = time.monotonic() - t0
        assert ended < 8, f"the requests ended {ended:.1f}s after SIGTERM (drain_seconds 1)"
        events = running.stream["events"]
        assert running.stream["status"] == 200 and events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "server_shutting_down"
        assert any('"content"' in e for e in events[:-2])  # what was generated went out before the error
        assert running.unary["status"] == 503
        assert running.unary["json"]["error"]["code"] == "server_shutting_down"
        assert int(running.unary["headers"]["retry-after"]) >= 1
        srv.proc.wait(30)
        wait_for(lambda: not alive(engine), timeout=20)
        log = srv.log()
        assert "Traceback" not in log and "did not stop" not in log
    finally:
        srv.stop()
