"""What the dashboard's JSON endpoints are made of: the activity counts (tokens per second from what the HTTP side
received) and the ring of recent log records."""

from __future__ import annotations

import logging
import threading

from mlx_router.engine.activity import RATE_WINDOW_S, Activity
from mlx_router.log_ring import LogRing


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_tokens_per_second_come_from_the_last_whole_seconds() -> None:
    clock = Clock()
    a = Activity(window_s=10, clock=clock)
    a.request_started("m")
    a.prompt_done("m", prompt_tokens=30, cached_tokens=20)
    for _ in range(RATE_WINDOW_S):
        a.tokens("m", 40)
        clock.now += 1
    a.tokens("m", 500)  # the second still filling is not in the rate yet
    snap = a.snapshot()
    assert snap["tokens_per_second"] == 40.0
    assert snap["tokens_per_second_series"][-RATE_WINDOW_S - 1 :] == [40] * RATE_WINDOW_S + [500]
    assert len(snap["tokens_per_second_series"]) == 10
    assert snap["completion_tokens"] == 40 * RATE_WINDOW_S + 500
    assert (snap["prompt_tokens"], snap["cached_tokens"], snap["requests"]) == (30, 20, 1)


def test_the_series_forgets_seconds_past_its_window() -> None:
    clock = Clock()
    a = Activity(window_s=5, clock=clock)
    a.tokens("m", 7)
    clock.now += 3
    assert a.series() == [0, 7, 0, 0, 0]
    clock.now += 30
    assert a.series() == [0] * 5
    assert a.snapshot()["tokens_per_second"] == 0.0
    assert a.snapshot()["completion_tokens"] == 7  # the totals stay


def test_outcomes_are_counted_per_model() -> None:
    a = Activity(clock=Clock())
    for model, outcome in (("a", "stop"), ("a", "length"), ("b", "stop"), ("b", "cancelled")):
        a.request_started(model)
        a.request_ended(model, outcome)
    snap = a.snapshot()
    assert snap["outcomes"] == {"stop": 2, "length": 1, "cancelled": 1}
    assert snap["models"]["b"]["outcomes"] == {"stop": 1, "cancelled": 1}
    assert snap["requests"] == 4


def test_the_log_ring_keeps_the_last_records_with_sequence_numbers() -> None:
    ring = LogRing(capacity=3)
    log = logging.getLogger("test.dashboard.ring")
    log.setLevel(logging.DEBUG)
    ring.install(log)
    try:
        log.debug("not kept: below INFO")
        for i in range(5):
            log.info("line %d", i)
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("it failed")
    finally:
        ring.uninstall(log)
    log.info("after uninstall")
    records = ring.records()
    assert [r["message"] for r in records] == ["line 3", "line 4", "it failed (ValueError: bad)"]
    assert [r["seq"] for r in records] == [4, 5, 6]  # the DEBUG line got no number
    assert records[-1]["level"] == "ERROR" and records[-1]["logger"] == "test.dashboard.ring"
    assert [r["seq"] for r in ring.records(after=4)] == [5, 6]
    assert [r["seq"] for r in ring.records(limit=1)] == [6]
    assert ring.records(after=6) == []


def test_the_log_ring_takes_records_from_many_threads() -> None:
    ring = LogRing(capacity=10_000)
    log = logging.getLogger("test.dashboard.threads")
    log.setLevel(logging.INFO)
    ring.install(log)
    try:

        def write() -> None:
            for _ in range(500):
                log.info("x")

        threads = [threading.Thread(target=write) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        ring.uninstall(log)
    assert sorted(r["seq"] for r in ring.records(limit=10_000)) == list(range(1, 2001))
