"""The engine in a process of its own: a crash inside it fails only the requests in flight, with a retryable
error, and a new engine serves the next ones; the engine never outlives the server."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest

from tests.e2e.conftest import base_config
from tests.server_process import RouterServer

LONG = {
    "model": "tiny-a",
    "messages": [{"role": "user", "content": "Tell me everything."}],
    "max_tokens": 3000,
    "temperature": 0,
    "ignore_eos": True,
}


def wait_for(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_crashed_engine_fails_what_is_in_flight_with_a_retryable_error_and_a_new_one_serves(models_root, tmp_path):
    with RouterServer(tmp_path / "srv", base_config(models_root, timeout=120)) as srv:
        first = srv.health()
        assert first["engine_pid"] != srv.proc.pid and first["engine_restarts"] == 0
        unary: dict = {}
        waiter = threading.Thread(
            target=lambda: unary.update(r=httpx.post(srv.base_url + "/v1/chat/completions", json=LONG, timeout=60))
        )
        events = []
        with httpx.stream(
            "POST", srv.base_url + "/v1/chat/completions", json=dict(LONG, stream=True), timeout=60
        ) as stream:
            lines = stream.iter_lines()
            for line in lines:
                if line.startswith("data: ") and '"content"' in line:
                    break  # tokens are flowing
            waiter.start()
            wait_for(lambda: srv.health()["models"][0]["running"] == 2)
            os.kill(first["engine_pid"], signal.SIGKILL)  # what a fatal error inside MLX does
            events = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
        waiter.join(30)
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "model_unloaded"
        r = unary["r"]
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_unloaded"
        assert int(r.headers["retry-after"]) >= 1
        wait_for(lambda: srv.health()["engine_restarts"] == 1 and srv.health()["worker_alive"])
        assert srv.health()["engine_pid"] != first["engine_pid"]
        ok = httpx.post(srv.base_url + "/v1/chat/completions", json=dict(LONG, max_tokens=4), timeout=60)
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 4
        assert "the engine exited unexpectedly" in srv.log()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_engine_process_ends_with_the_server(models_root, tmp_path, how):
    srv = RouterServer(tmp_path / "srv", base_config(models_root)).start()
    try:
        engine = srv.health()["engine_pid"]
        assert alive(engine)
        assert srv.proc is not None
        srv.proc.send_signal(how)
        srv.proc.wait(20)
        wait_for(lambda: not alive(engine), timeout=20)
    finally:
        srv.stop()


def test_ctrl_c_stops_server_and_engine_cleanly(models_root, tmp_path):
    srv = RouterServer(tmp_path / "srv", base_config(models_root)).start()
    try:
        engine = srv.health()["engine_pid"]
        body = {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        assert httpx.post(srv.base_url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGINT)
        assert srv.proc.wait(30) == 0
        wait_for(lambda: not alive(engine), timeout=20)
        log = srv.log()
        assert "Application shutdown complete" in log
        assert "Traceback" not in log
        assert "terminate called" not in log  # MLX's threads torn down under the interpreter's exit: an abort
        assert "did not stop" not in log  # the engine left when told, and was not killed
    finally:
        srv.stop()


def _mlx_mapped(pid: int) -> bool:
    """Whether MLX's libraries are mapped into the process (Linux: its memory maps name the files)."""
    with open(f"/proc/{pid}/maps", encoding="utf-8") as maps:
        return any("libmlx" in line or "/mlx/core" in line for line in maps)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/<pid>/maps")
def test_the_http_process_never_loads_mlx_while_serving(models_root, tmp_path):
    """Serving a chat (template, tokens, detokenizing, parsing) needs no MLX in the HTTP process: only the
    engine process maps MLX's libraries."""
    with RouterServer(tmp_path, base_config(models_root)) as server:
        body = {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        assert httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
        assert server.proc is not None
        engine_pid = server.health()["engine_pid"]
        assert _mlx_mapped(engine_pid)  # the probe sees MLX where it is
        assert not _mlx_mapped(server.proc.pid)
