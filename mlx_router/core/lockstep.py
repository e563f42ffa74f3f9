"""The engine's worker loop in a distributed group: every rank runs the same rounds, rank 0 deciding.

A sharded model runs collective operations inside its forward pass, so every rank must step the same batch at
the same time. Each round of the worker, rank 0 sends the other ranks the engine commands it took since the last
round (loads, unloads, admissions with their prompt tokens and sampling parameters, grammars, cancellations)
and every rank, rank 0 included, applies them in that order and then steps every runner that has work. The
runners' state is a function of the commands alone, so every rank schedules, prefills, samples, stores to and
fetches from its prefix cache exactly as rank 0 does:

- what would depend on a rank's own clock is decided on rank 0 and sent as a command: a request past its
  deadline becomes a cancellation (its request reaches the runners without a deadline), and the batch's
  time-based holds are off in a group (`ModelPool` sets `prefill_gather_ms` and `idle_gather_ms` to 0);
- a sampled request without a seed gets one derived from its request id, so every rank draws the same token;
- a load succeeds on every rank or on none (`ModelPool._agree`).

While idle, rank 0 still sends an empty round every `idle_round_ms`, so a rank that died is noticed soon; the
other ranks sleep between idle rounds instead of waiting inside the collective operation, where MLX's ring
backend spins. A rank that hangs blocks the others inside a collective operation, which the watchdog ends after
`step_timeout_s`. Either way the rank reports the group lost and exits non-zero (rank 0's server then answers
503 and exits too), for its supervisor to restart the whole group: ranks that may disagree never serve again.

Reading a round's header waits for the step before it (one stream: `core/group.py`), so a group loses the
overlap of a step's compute with the next step's Python work that one process has. Queueing each round's header
ahead of the step before it (a fixed-size header read a round later, commands applied a step later) would keep
the overlap; tried and reverted: no gain on the 2-core CPU VM, and a rank killed under it was once noticed only
by the watchdog (bench/HISTORY.md, distributed serving).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
import threading
import time
from collections.abc import Callable

from mlx_router.config.settings import DistributedConfig
from mlx_router.core.group import RankGroup, Watchdog
from mlx_router.core.worker import MLXWorker
from mlx_router.engine.commands import CancelGeneration, StartGeneration
from mlx_router.engine.wire import Message

logger = logging.getLogger(__name__)

GATHER = 1  # a round's flag: every rank sends its readings (`RankReadings`)
GATHER_INTERVAL = 0.5  # seconds between two gathers of the ranks' readings
TIMES_PERIOD = 10.0  # seconds between two log lines of where a busy group's rounds spent their time
STOP: Message = ("stop",)  # rank 0's last round: every rank unloads its models and ends its loop
READINGS = ("active", "cache", "peak", "device_memory", "budget", "running", "queued", "models")


def request_seed(request_id: str) -> int:
    """The seed every rank samples an unseeded request with: its id's hash (ids are unique and random)."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "little") >> 1


class Lockstep:
    """The worker's rounds on one rank of a group (`worker.round`)."""

    def __init__(
        self,
        group: RankGroup,
        cfg: DistributedConfig,
        worker: MLXWorker,
        apply: Callable[[Message], None],
        readings: Callable[[], list[int]],
        on_fatal: Callable[[str], None],
        on_stop: Callable[[], None],
        on_readings: Callable[[], None],
    ) -> None:
        self.group = group
        self._cfg = cfg
        self._worker = worker
        self._apply = apply
        self._readings = readings
        self._on_fatal = on_fatal
        self._on_stop = on_stop
        self._on_readings = on_readings  # rank 0 reports the fresh readings to the HTTP side
        self._lock = threading.Lock()
        self._pending: list[Message] = []
        self._deadlines: dict[str, tuple[str, float]] = {}  # request id -> (model id, time.monotonic() deadline)
        self._last_gather = 0.0
        self._idle = cfg.idle_round_ms / 1000
        self._was_idle = False  # the last round had no command and no runner with work (the same on every rank)
        self._times = RoundTimes(group.rank)
        self.ranks: list[dict[str, int]] = []  # the latest readings of every rank, in rank order
        self._watchdog = Watchdog(self._fatal)
        worker.round = self.round
        worker.max_wait = self._idle if group.leader else 0.0  # a follower never waits but in a round
        worker.fail_fast = True

    # -- rank 0, any thread ----------------------------------------------------------------------------------
    def submit(self, msg: Message) -> None:
        """Queue an engine command for the next round (rank 0)."""
        msg = self._deterministic(msg)
        with self._lock:
            self._pending.append(msg)
        self._worker.post(_nothing)  # wakes the worker if it waits for a command

    def _deterministic(self, msg: Message) -> Message:
        """The command as every rank must apply it: no clock, no unseeded randomness."""
        command = msg[1] if msg[0] == "post" else None
        if isinstance(command, StartGeneration):
            req = command.request
            if req.deadline is not None:
                with self._lock:
                    self._deadlines[req.request_id] = (command.model_id, req.deadline)
            sampling = req.sampling
            if not sampling.greedy and sampling.seed is None:
                sampling = dataclasses.replace(sampling, seed=request_seed(req.request_id))
            request = dataclasses.replace(req, deadline=None, sampling=sampling)
            return ("post", dataclasses.replace(command, request=request))
        if isinstance(command, CancelGeneration):
            with self._lock:
                self._deadlines.pop(command.request_id, None)
        return msg

    def _take(self) -> list[Message]:
        now = time.monotonic()
        with self._lock:
            pending, self._pending = self._pending, []
            expired = [(rid, model) for rid, (model, deadline) in self._deadlines.items() if now > deadline]
            for rid, _ in expired:
                del self._deadlines[rid]
        # A request past its deadline (or one that already ended: then a no-op) ends on every rank at once.
        timeouts = [("post", CancelGeneration(m, rid, reason="timeout")) for rid, m in expired]
        return pending + timeouts

    # -- the worker thread -----------------------------------------------------------------------------------
    def round(self) -> None:
        try:
            self._round()
        except Exception as e:  # a collective operation failed: a rank is gone
            logger.exception("rank %d: the group failed", self.group.rank)
            self._fatal(f"the distributed group failed on rank {self.group.rank}: {e}")

    def _round(self) -> None:
        cfg, leader = self._cfg, self.group.leader
        msgs: list[Message] = []
        payload, flags = b"", 0
        if leader:
            msgs = self._take()
            payload = pickle.dumps(msgs, protocol=pickle.HIGHEST_PROTOCOL) if msgs else b""
            if time.monotonic() - self._last_gather >= GATHER_INTERVAL:
                flags |= GATHER
        elif self._was_idle:
            time.sleep(self._idle)  # rank 0's next idle round is about this far off
        t0 = time.perf_counter()
        with self._watchdog.guard("a round of the group", cfg.step_timeout_s + self._idle):
            data, flags = self.group.broadcast(payload, flags)
            if flags & GATHER:
                self._gather()
        if not leader and data:
            msgs = pickle.loads(data)
        t1 = time.perf_counter()
        for msg in msgs:
            if msg == STOP:
                self._stop()
                return
            limit = cfg.load_timeout_s if msg[0] == "call" else cfg.step_timeout_s
            with self._watchdog.guard(f"the command {type(msg[-1]).__name__}", limit):
                self._apply(msg)
        busy = self._worker.busy()
        t2 = time.perf_counter()
        with self._watchdog.guard("a generation step", cfg.step_timeout_s):
            self._worker.step_all()
        self._was_idle = not msgs and not self._worker.busy()
        if busy:
            self._times.add(t1 - t0, t2 - t1, time.perf_counter() - t2)

    def _gather(self) -> None:
        rows = self.group.exchange(self._readings())
        self.ranks = [dict(zip(READINGS, row, strict=True)) for row in rows]
        self._last_gather = time.monotonic()
        if self.group.leader:
            self._on_readings()

    def _stop(self) -> None:
        with self._watchdog.guard("unloading at the end", self._cfg.load_timeout_s):
            self._on_stop()
        self._worker.finish()
        logger.info("rank %d: the group stopped", self.group.rank)

    def _fatal(self, reason: str) -> None:
        self._on_fatal(reason)


class RoundTimes:
    """Where a busy group's rounds spend their time, logged every TIMES_PERIOD seconds: waiting for and reading
    rank 0's round (which also waits for the step before it to finish), applying commands, stepping."""

    def __init__(self, rank: int) -> None:
        self._rank = rank
        self._since = time.perf_counter()
        self.rounds, self.share_s, self.apply_s, self.step_s = 0, 0.0, 0.0, 0.0

    def add(self, share: float, apply: float, step: float) -> None:
        self.rounds += 1
        self.share_s, self.apply_s, self.step_s = self.share_s + share, self.apply_s + apply, self.step_s + step
        now = time.perf_counter()
        if now - self._since < TIMES_PERIOD:
            return
        n = self.rounds
        logger.info(
            "rank %d: %d busy rounds in %.1f s: sharing %.2f ms a round, commands %.2f ms, step %.2f ms",
            self._rank,
            n,
            now - self._since,
            1000 * self.share_s / n,
            1000 * self.apply_s / n,
            1000 * self.step_s / n,
        )
        self._since, self.rounds, self.share_s, self.apply_s, self.step_s = now, 0, 0.0, 0.0, 0.0


def _nothing() -> None:
    """Posted to wake the worker: the round that follows sends what was submitted."""


def agreed_failures(group: RankGroup, ok: bool) -> list[int]:
    """The ranks on which a step that must succeed everywhere or nowhere failed (every rank calls this)."""
    return [rank for rank, row in enumerate(group.exchange([0 if ok else 1])) if row[0]]
