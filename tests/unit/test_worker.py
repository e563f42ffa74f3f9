"""The MLX worker's loop: it waits for commands while a runner holds its requests, instead of spinning."""

from __future__ import annotations

import threading
import time

from mlx_router.core.worker import MLXWorker


class HeldRunner:
    """Has work from the start, but nothing to step until `hold` seconds have passed."""

    def __init__(self, hold: float) -> None:
        self.until = time.monotonic() + hold
        self.steps = 0
        self.done = threading.Event()

    def has_work(self) -> bool:
        return not self.done.is_set()

    def ready_in(self) -> float:
        return max(0.0, self.until - time.monotonic())

    def step(self) -> None:
        self.steps += 1
        if time.monotonic() >= self.until:
            self.done.set()

    def cancel_all(self, error: BaseException) -> None:
        self.done.set()


def test_the_worker_sleeps_through_a_hold_and_still_answers_commands():
    worker = MLXWorker()
    worker.start()
    try:
        runner = HeldRunner(0.4)
        worker.call(lambda: worker.attach("m", runner)).result(timeout=5)
        time.sleep(0.1)
        t0 = time.monotonic()
        assert worker.call(lambda: 42).result(timeout=5) == 42
        assert time.monotonic() - t0 < 0.2  # a command during the hold runs at once
        assert runner.done.wait(5)
        assert runner.steps <= 4  # woken by the hold's end and the command, not polling
    finally:
        worker.stop()
