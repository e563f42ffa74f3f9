"""A rank other than 0 of a distributed group: no HTTP, only the engine, applying rank 0's rounds.

`mlx-router --config cfg.json` started by `mlx.launch` (or by hand with MLX_RANK and MLX_HOSTFILE) on a rank
other than 0 comes here: it joins the group, then its engine loads, steps and unloads exactly what rank 0's
does (`core/lockstep.py`). It ends when rank 0 stops the group (status 0), or when the group breaks up (a rank
died or hung: status `GROUP_LOST_EXIT`, for the supervisor to start the group again).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

from mlx_router.config.settings import Settings
from mlx_router.core.host import EngineHost
from mlx_router.engine.wire import Message

logger = logging.getLogger(__name__)


def run_follower(settings: Settings) -> int:
    """Serve as a follower rank until rank 0 stops the group (the process then ends here, status 0); returns
    only the exit status of a start that failed."""

    signals = 0

    def wait_for_rank0(sig: int, frame: FrameType | None) -> None:
        # mlx.launch and service managers signal every rank: rank 0 drains its requests, then stops the group.
        # A second signal means it: this rank leaves now (and the group with it).
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(128 + sig)
        logger.info("signal %d: this rank stops when rank 0 stops the group (a second signal: now)", sig)

    signal.signal(signal.SIGINT, wait_for_rank0)
    signal.signal(signal.SIGTERM, wait_for_rank0)
    try:
        host = EngineHost(settings, _nowhere, exit_on_fatal=True)
    except RuntimeError as e:  # the group could not be formed
        logger.error("%s", e)
        return 2
    if host.group is None or host.group.leader:
        logger.error("this process is not a follower rank of a group (MLX_RANK and the launch disagree)")
        return 2
    logger.info("rank %d of %d follows rank 0", host.group.rank, host.group.size)
    host.start()
    while host.worker.alive:
        host.worker.join(1.0)
    # Models unloaded, worker stopped: leave without the interpreter's teardown, in which MLX's own threads were
    # destroyed still running ("terminate called without an active exception", an abort), as the engine does.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _nowhere(msg: Message) -> None:
    """A follower's engine answers nobody: rank 0's answers the HTTP side."""
