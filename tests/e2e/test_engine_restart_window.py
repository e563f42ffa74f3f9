"""Requests that arrive while a crashed engine is being replaced (issue 20, item 2): each waits for the new engine
and is served, or gets a 503 with Retry-After at once; none hangs, and /v1/health counts them meanwhile."""

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

BODY = {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
DELAYS = (0.01, 0.05, 0.2, 0.4, 0.6)  # seconds after the kill: the window the probe found
BOUND = 20.0  # a request must end within this (the server's timeout is 60 s)


def _send(url: str, stream: bool, out: dict[str, Any]) -> None:
    t0 = time.monotonic()
    try:
        if stream:
            with httpx.stream("POST", url, json=dict(BODY, stream=True), timeout=BOUND + 10) as r:
                out["status"], out["headers"] = r.status_code, r.headers
                out["events"] = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        else:
            r = httpx.post(url, json=BODY, timeout=BOUND + 10)
            out["status"], out["headers"], out["json"] = r.status_code, r.headers, r.json()
    except httpx.HTTPError as e:
        out["error"] = repr(e)
    out["seconds"] = time.monotonic() - t0


def _served(out: dict[str, Any]) -> bool:
    if out.get("status") != 200:
        return False
    if "json" in out:
        return out["json"]["usage"]["completion_tokens"] == 4
    events = out["events"]
    return events[-1] == "[DONE]" and not any('"error"' in e for e in events)


def _refused_honestly(out: dict[str, Any]) -> bool:
    """A 503 with Retry-After, or (a stream already admitted when the engine died) an error event and [DONE]."""
    if out.get("status") == 503:
        return int(out["headers"]["retry-after"]) >= 1
    events = out.get("events") or []
    return len(events) >= 2 and events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] is not None


def test_requests_sent_just_after_the_engine_dies_are_served_by_the_new_engine(models_root, tmp_path):
    with RouterServer(tmp_path / "srv", base_config(models_root, timeout=60)) as srv:
        url = srv.base_url + "/v1/chat/completions"
        assert httpx.post(url, json=BODY, timeout=60).status_code == 200  # tiny-a loaded
        engine = srv.health()["engine_pid"]
        results: list[dict[str, Any]] = [{} for _ in DELAYS]
        threads = [
            threading.Thread(target=_send, args=(url, i % 2 == 1, results[i]), daemon=True) for i in range(len(DELAYS))
        ]
        os.kill(engine, signal.SIGKILL)
        killed = time.monotonic()
        for delay, thread in zip(DELAYS, threads, strict=True):
            time.sleep(max(0.0, killed + delay - time.monotonic()))
            thread.start()
        counted = 0
        while any(t.is_alive() for t in threads) and time.monotonic() < killed + BOUND + 15:
            h = srv.health()
            if any(t.is_alive() for t in threads):  # the report was taken while requests waited
                counted = max(counted, h["requests_in_flight"])
            time.sleep(0.05)
        for t in threads:
            t.join(1)
        for delay, out in zip(DELAYS, results, strict=True):
            assert "error" not in out, f"request sent {delay}s after the kill: {out['error']}"
            assert out["seconds"] < BOUND, f"request sent {delay}s after the kill took {out['seconds']:.1f}s"
            assert _served(out) or _refused_honestly(out), (delay, out)
        # Once the server has seen the engine exit (well within 0.2 s), new requests wait for its successor.
        late = [out for delay, out in zip(DELAYS, results, strict=True) if delay >= 0.2]
        assert all(_served(out) for out in late), late
        assert counted >= 2, f"/v1/health counted at most {counted} of the waiting requests"
        h = srv.health()
        assert h["engine_restarts"] == 1 and h["engine_pid"] != engine and h["requests_in_flight"] == 0
