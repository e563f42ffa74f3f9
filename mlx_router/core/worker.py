"""The one thread that owns MLX: every model load, unload and generation step runs here.

Other threads talk to it by posting callables (`call`); it answers through `concurrent.futures.Future`s and,
for tokens, through callbacks that hop onto the event loop with `call_soon_threadsafe`. Between commands it
steps every runner that has work, round-robin, so several models can generate at once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

import mlx.core as mx

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Steppable(Protocol):
    def has_work(self) -> bool: ...

    def ready_in(self) -> float: ...  # seconds until a step has something to do (0: now)

    def step(self) -> None: ...

    def cancel_all(self, error: BaseException) -> None: ...


class MLXWorker:
    """A daemon thread running MLX commands and generation steps."""

    def __init__(self, name: str = "mlx-worker") -> None:
        self._inbox: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        # What one round after the commands does: step the runners with work; in a distributed group a lockstep
        # round (core/lockstep.py) that first agrees with the other ranks on the batch's changes.
        self.round: Callable[[], None] = self.step_all
        self.max_wait: float | None = None  # the longest the loop waits for a command (a group's idle rounds)
        self.fail_fast = False  # a failed step raises (a group's ranks cannot be shown to agree after one)
        self._runners: dict[str, Steppable] = {}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopping = False
        self._after_iteration: list[Callable[[], None]] = []

    # -- any thread ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def call(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run `fn` on the worker thread; the future holds its result or exception."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

        self._inbox.put(run)
        return fut

    def post(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the worker thread, fire and forget (errors are logged)."""
        self._inbox.put(fn)

    def add_iteration_hook(self, fn: Callable[[], None]) -> None:
        """Call `fn` on the worker thread after every round of commands and steps (e.g. to flush events)."""
        self._after_iteration.append(fn)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._inbox.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def finish(self) -> None:
        """End the loop after this round (worker thread: a group's last round)."""
        self._stopping = True

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- worker thread only --------------------------------------------------------------------------------
    def attach(self, key: str, runner: Steppable) -> None:
        self._runners[key] = runner

    def detach(self, key: str) -> Steppable | None:
        return self._runners.pop(key, None)

    def _run(self) -> None:
        while not self._stopping:
            if not self._drain(self._wait()):
                break
            self.round()
            for hook in self._after_iteration:
                hook()
        logger.debug("MLX worker stopped")

    def busy(self) -> bool:
        """Whether a runner has work (worker thread)."""
        return any(r.has_work() for r in self._runners.values())

    def step_all(self) -> None:
        """Step every runner with work, in the order they were attached (worker thread only)."""
        # A method of its own so no local keeps a runner (and its model) alive while the loop waits.
        for key, runner in list(self._runners.items()):
            if runner.has_work():
                self._step(key, runner)

    def _wait(self) -> float | None:
        """How long to wait for a command before stepping: None with no work, 0 when a step is due."""
        waits = [r.ready_in() for r in self._runners.values() if r.has_work()]
        if self.max_wait is not None:
            waits.append(self.max_wait)
        return min(waits) if waits else None

    def _drain(self, wait: float | None) -> bool:
        """Run queued commands, waiting up to `wait` seconds for the first (None: until one comes). False once
        stop was asked."""
        try:
            item = self._inbox.get(block=wait is None or wait > 0, timeout=wait or None)
        except queue.Empty:
            return True
        while True:
            if item is None:
                return False
            try:
                item()
            except Exception:  # a fire-and-forget command failed; the worker must live on
                logger.exception("MLX worker command failed")
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _step(self, key: str, runner: Steppable) -> None:
        try:
            runner.step()
        except Exception as e:
            if self.fail_fast:
                raise
            # A failing step fails the requests of that batch, not the server.
            logger.exception("generation step failed for %s", key)
            runner.cancel_all(e)
            mx.clear_cache()
