"""Prompts far over the context are refused before they are tokenized, quickly and without holding memory:
three concurrent 10 MB chat prompts (and a 10 MB legacy prompt) to a 4,096-token model through a real server,
with the RSS of the server and of its engine process sampled before, during and after.

Before the token floor (serving/token_floor.py) each 10 MB prompt was tokenized whole first: ~1.2 GB and
seconds of CPU each on this project's CPU host, and gigabytes stayed held after the 400s."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import base_config
from tests.server_process import RouterServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MB = 1024 * 1024
PROMPT = ("The quick brown fox jumps over the lazy dog; " * (10 * MB // 45 + 1))[: 10 * MB]


@pytest.fixture(scope="module")
def server(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterServer]:
    with RouterServer(tmp_path_factory.mktemp("oversized"), base_config(models_root, max_tokens=8)) as srv:
        yield srv


def rss_mb(server: RouterServer) -> tuple[float, float]:
    """RSS of the HTTP server and of its engine (child) processes, in MB."""
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    engine = sum(c.memory_info().rss for c in proc.children(recursive=True))
    return proc.memory_info().rss / MB, engine / MB


class PeakSampler:
    """The highest RSS seen while the block runs, sampled every 20 ms."""

    def __init__(self, server: RouterServer) -> None:
        self.server, self.peak = server, (0.0, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = rss_mb(self.server)
            self.peak = (max(self.peak[0], now[0]), max(self.peak[1], now[1]))
            time.sleep(0.02)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_huge_prompts_are_refused_cheaply_and_memory_comes_back(server: RouterServer) -> None:
    url = server.base_url
    chat = {"model": "tiny-a", "max_tokens": 4, "temperature": 0}
    # the model loaded and its tokenizer profiled: what the server holds anyway
    ok = httpx.post(url + "/v1/chat/completions", json={**chat, "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200, ok.text
    time.sleep(1.0)
    before = rss_mb(server)

    def send(path: str, body: dict) -> tuple[httpx.Response, float]:
        t0 = time.monotonic()
        r = httpx.post(url + path, json=body, timeout=300)
        return r, time.monotonic() - t0

    bodies = [("/v1/chat/completions", {**chat, "messages": [{"role": "user", "content": PROMPT}]})] * 3
    bodies.append(("/v1/completions", {"model": "tiny-a", "prompt": PROMPT, "max_tokens": 4}))
    with PeakSampler(server) as sampler, ThreadPoolExecutor(len(bodies)) as pool:
        results = list(pool.map(lambda pb: send(*pb), bodies))
    time.sleep(1.0)
    after = rss_mb(server)

    seconds = [round(t, 1) for _, t in results]
    report = f"server/engine RSS MB: before {before}, peak {sampler.peak}, after {after}; answered in {seconds} s"
    print(report)
    for r, _ in results:
        assert r.status_code == 400, r.text[:300]
        assert r.json()["error"]["code"] == "context_length_exceeded"
    # wide margins: tokenizing the four prompts took ~1.2 GB each, and most of it stayed held
    assert sampler.peak[0] - before[0] < 1000, report
    assert after[0] - before[0] < 250, report
    assert sampler.peak[1] - before[1] < 150 and after[1] - before[1] < 150, report  # the engine never saw them
    assert max(seconds) < 20, report
    assert all("at least" in r.json()["error"]["message"] for r, _ in results)  # refused by the floor
    # and the server still serves
    again = httpx.post(url + "/v1/chat/completions", json={**chat, "messages": [{"role": "user", "content": "hi"}]})
    assert again.status_code == 200, again.text
