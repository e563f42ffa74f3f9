"""The ranks of a distributed group, through MLX's own `mx.distributed` (ring, JACCL, MPI or NCCL).

A group exists when the process was launched as one rank of several (`mlx.launch`, or MLX_RANK and MLX_HOSTFILE
set by hand; MPI's own variables under mpirun). Rank 0 decides; the others apply its decisions
(`core/lockstep.py`). Two collective operations carry everything the ranks say to each other outside the model:

- `broadcast`: rank 0's bytes to every rank, as a sum in which the other ranks add zeros (a header with the
  length first, so an empty round costs one all_sum of two integers);
- `exchange`: one row of integers from every rank to every rank (memory readings, a load's outcome).

Both run on the group's stream, the one the runners step their models on (`ModelRunner(stream=...)`): a
collective operation pairs with the other ranks' next one, so ours must never run beside a model's still in
flight on another stream (they interleaved on the ring's sockets and summed each other's bytes). Reading a
round's header therefore waits for the step before it.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_router.config.ranks import GROUP_LOST_EXIT, launch_rank
from mlx_router.config.settings import DistributedConfig

logger = logging.getLogger(__name__)

__all__ = ["GROUP_LOST_EXIT", "RankGroup", "Watchdog", "join_group"]


class RankGroup:
    """This process's place in a group of ranks."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.rank: int = group.rank()
        self.size: int = group.size()
        self._stream: Any = None

    @property
    def stream(self) -> Any:
        """The stream every collective operation of this process runs on (MLX's streams belong to the thread
        that made them: made by the worker thread, which alone uses the group)."""
        if self._stream is None:
            self._stream = mx.new_stream(mx.default_device())
        return self._stream

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def broadcast(self, data: bytes, flags: int = 0) -> tuple[bytes, int]:
        """Rank 0's `data` and `flags` on every rank (the other ranks' arguments are ignored)."""
        mine = self.leader
        head = mx.array([len(data), flags] if mine else [0, 0], dtype=mx.int64)
        length, flags = (int(v) for v in np.array(self._sum(head), copy=False))
        if length == 0:
            return b"", flags
        body = np.frombuffer(data, dtype=np.uint8) if mine else np.zeros(length, dtype=np.uint8)
        return bytes(np.array(self._sum(mx.array(body)), copy=False)), flags

    def exchange(self, row: Sequence[int]) -> list[list[int]]:
        """Every rank's `row` (all of the same length), in rank order, on every rank."""
        table = np.zeros((self.size, len(row)), dtype=np.int64)
        table[self.rank] = row
        return [[int(v) for v in r] for r in np.array(self._sum(mx.array(table)), copy=False)]

    def _sum(self, x: mx.array) -> mx.array:
        out = mx.distributed.all_sum(x, group=self.group, stream=self.stream)
        mx.eval(out)
        return out


def join_group(cfg: DistributedConfig, env: Mapping[str, str] | None = None) -> RankGroup | None:
    """The group this process is a rank of, or None when it was launched alone. Raises RuntimeError when the
    launch named a rank but the group cannot be formed (a wrong hostfile, a backend MLX lacks)."""
    env = os.environ if env is None else env
    if launch_rank(env) is None:
        return None
    # MLX waits for every rank without a limit, holding the GIL (no Python thread can watch it): the kernel's
    # alarm ends a rank whose peers never came (SIGALRM; rank 0's server then fails its start-up)
    logger.info("waiting up to %.0fs for every rank to join the group (%s backend)", cfg.join_timeout_s, cfg.backend)
    signal.alarm(max(1, math.ceil(cfg.join_timeout_s)))
    try:
        group = mx.distributed.init(strict=True, backend=cfg.backend)
    except Exception as e:
        raise RuntimeError(f"the distributed group could not be formed with backend {cfg.backend!r}: {e}") from e
    finally:
        signal.alarm(0)
    if group.size() < 2:
        return None
    ranks = RankGroup(group)
    logger.info("rank %d of %d joined the group (%s backend)", ranks.rank, ranks.size, cfg.backend)
    return ranks


class Watchdog:
    """Ends the process when one guarded operation (a round, a step, a load) runs past its limit: a rank that
    hangs blocks every other rank inside a collective operation, where no exception ever comes."""

    def __init__(self, on_timeout: Callable[[str], None], period: float = 0.25) -> None:
        self._on_timeout = on_timeout
        self._period = period
        self._lock = threading.Lock()
        self._what = ""
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._watch, name="group-watchdog", daemon=True)
        self._thread.start()

    def guard(self, what: str, seconds: float) -> _Guard:
        return _Guard(self, what, seconds)

    def _arm(self, what: str, seconds: float) -> None:
        with self._lock:
            self._what, self._deadline = what, time.monotonic() + seconds

    def _disarm(self) -> None:
        with self._lock:
            self._deadline = None

    def _watch(self) -> None:
        while True:
            time.sleep(self._period)
            with self._lock:
                late = self._deadline is not None and time.monotonic() > self._deadline
                what = self._what
            if late:
                self._on_timeout(f"{what} ran past its time limit: a rank of the group is hung or gone")
                return


class _Guard:
    def __init__(self, dog: Watchdog, what: str, seconds: float) -> None:
        self._dog, self._what, self._seconds = dog, what, seconds

    def __enter__(self) -> None:
        self._dog._arm(self._what, self._seconds)

    def __exit__(self, *exc: object) -> None:
        self._dog._disarm()
