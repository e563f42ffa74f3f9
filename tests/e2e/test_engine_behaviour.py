"""Engine behaviour seen from outside: swaps under mixed traffic, shared loads, failed loads, disconnects,
a responsive event loop, real streaming, limits and timeouts."""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.e2e.conftest import base_config
from tests.server_process import RouterServer

HELLO = [{"role": "user", "content": "Tell me a story about a robot."}]


def greedy(client, model, n=24, messages=HELLO):
    r = client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=n, extra_body={"ignore_eos": True}
    )
    return r.choices[0].message.content


def test_mixed_traffic_answers_from_the_named_model(client):
    solo = {m: greedy(client, m) for m in ("tiny-a", "tiny-b")}
    assert solo["tiny-a"] != solo["tiny-b"]
    order = ["tiny-a", "tiny-b"] * 6
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda m: (m, greedy(client, m)), order))
    for model, text in got:
        assert text == solo[model], model


def test_batched_greedy_equals_solo(client):
    prompts = [[{"role": "user", "content": f"Question number {i}: what is up?"}] for i in range(6)]
    solo = [greedy(client, "tiny-a", 32, p) for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda p: greedy(client, "tiny-a", 32, p), prompts))
    assert together == solo


@pytest.fixture()
def fresh_models(models_root, tmp_path):
    """A model dir with two working models and one whose weights are broken."""
    root = tmp_path / "models"
    root.mkdir()
    for name in ("tiny-a", "tiny-b"):
        os.symlink(models_root / name, root / name)
    broken = root / "broken"
    shutil.copytree(models_root / "tiny-a", broken, symlinks=False)
    for f in broken.glob("*.safetensors"):
        f.write_bytes(b"this is not a safetensors file")
    return root


def test_shared_load_and_failed_load(fresh_models, tmp_path):
    with RouterServer(tmp_path / "srv", base_config(fresh_models)) as srv:
        client = srv.openai()
        with ThreadPoolExecutor(6) as pool:
            outs = list(pool.map(lambda _: greedy(client, "tiny-b", 8), range(6)))
        assert len(set(outs)) == 1
        slot = {m["id"]: m for m in srv.health()["models"]}["tiny-b"]
        assert slot["loads"] == 1 and slot["state"] == "ready"
        before = greedy(client, "tiny-a", 8)
        with pytest.raises(openai.InternalServerError) as e:
            greedy(client, "broken", 8)
        assert e.value.body["code"] == "model_load_failed"
        assert "Traceback" not in str(e.value.body)
        assert greedy(client, "tiny-a", 8) == before  # the loaded models keep serving
        assert greedy(client, "tiny-b", 8) == outs[0]


def _running(server):
    return sum(m["running"] + m["queued"] for m in server.health()["models"])


def test_stream_disconnect_stops_generation(server, client):
    stream = client.chat.completions.create(
        model="tiny-a",
        messages=HELLO,
        max_tokens=4000,
        stream=True,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    for i, _ in enumerate(stream):
        if i == 5:
            break
    stream.close()
    deadline = time.monotonic() + 3
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(server) == 0


def test_a_stream_whose_client_leaves_before_reading_stops_generation(server):
    """The request is queued on the engine when it is admitted; a client gone before the response starts
    must still cancel it."""
    import json
    import socket
    from urllib.parse import urlparse

    body = json.dumps(
        {"model": "tiny-a", "messages": HELLO, "max_tokens": 4000, "stream": True, "ignore_eos": True}
    ).encode()
    url = urlparse(server.base_url)
    for _ in range(3):
        with socket.create_connection((url.hostname, url.port)) as sock:
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.hostname}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body)
    deadline = time.monotonic() + 5
    while (_running(server) or server.health()["requests_in_flight"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(server) == 0
    assert server.health()["requests_in_flight"] == 0


def test_non_stream_disconnect_stops_generation(server):
    body = {"model": "tiny-a", "messages": HELLO, "max_tokens": 4000, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=0.8)
    deadline = time.monotonic() + 3
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(server) == 0


def test_first_token_long_before_last(client):
    greedy(client, "tiny-a", 4)  # loaded and warm
    t0 = time.perf_counter()
    times = []
    for c in client.chat.completions.create(
        model="tiny-a",
        messages=HELLO,
        max_tokens=600,
        stream=True,
        temperature=0,
        extra_body={"ignore_eos": True},
    ):
        if c.choices and c.choices[0].delta.content:
            times.append(time.perf_counter() - t0)
    assert len(times) > 100
    assert times[0] < 0.25 * times[-1]


def test_health_answers_quickly_during_generation(server, client):
    greedy(client, "tiny-a", 4)
    done = threading.Event()

    def generate():
        try:
            greedy(client, "tiny-a", 1500)
        finally:
            done.set()

    threads = [threading.Thread(target=generate) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    latencies = []
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        while not done.is_set() and len(latencies) < 40:
            t0 = time.perf_counter()
            assert http.get("/health").status_code == 200
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.02)
    for t in threads:
        t.join()
    assert len(latencies) >= 10
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.05, latencies


def test_limits_and_timeouts(models_root, tmp_path):
    cfg = base_config(models_root, max_running_requests=1, max_queued_requests=0, timeout=1.5)
    cfg["server"] = {"max_body_mb": 0.01, "api_keys": ["sekret"]}
    with RouterServer(tmp_path / "srv", cfg) as srv:
        with pytest.raises(openai.AuthenticationError):
            srv.openai().models.list()
        client = srv.openai(api_key="sekret")
        assert httpx.get(srv.base_url + "/health").status_code == 200  # liveness needs no key
        greedy(client, "tiny-a", 2)
        # a body over the limit
        big = [{"role": "user", "content": "x" * 20000}]
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="tiny-a", messages=big, max_tokens=1)
        assert e.value.status_code == 413
        # the queue is full while one long request runs: 429 at once, with Retry-After
        long = threading.Thread(target=lambda: _swallow(lambda: greedy(client, "tiny-a", 4000)))
        long.start()
        time.sleep(0.3)
        t0 = time.perf_counter()
        r = httpx.post(
            srv.base_url + "/v1/chat/completions",
            headers={"Authorization": "Bearer sekret"},
            json={"model": "tiny-a", "messages": HELLO, "max_tokens": 2},
            timeout=10,
        )
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert time.perf_counter() - t0 < 1.0
        long.join()
        # the whole request is bounded by `timeout`
        with pytest.raises(openai.APIStatusError) as e:
            greedy(client, "tiny-a", 4000)
        assert e.value.status_code == 504
        events = []
        with httpx.stream(
            "POST",
            srv.base_url + "/v1/chat/completions",
            headers={"Authorization": "Bearer sekret"},
            json={
                "model": "tiny-a",
                "messages": HELLO,
                "max_tokens": 4000,
                "stream": True,
                "ignore_eos": True,
            },
            timeout=10,
        ) as r:
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert '"timeout"' in events[-2] and events[-1] == "data: [DONE]"


def _swallow(fn):
    try:
        fn()
    except Exception:
        pass
