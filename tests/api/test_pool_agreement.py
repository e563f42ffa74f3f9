"""In a distributed group a load succeeds on every rank or on none (`ModelPool._agree`): the warm-up and every
step run collective operations that need all ranks, so a rank that loaded must drop its shard when another
could not. Rank 0's pool over a real tiny model, with the other rank's answer to the exchange given here."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest

from mlx_router.config.discovery import ModelEntry
from mlx_router.config.settings import Settings
from mlx_router.core.pool import ModelPool
from mlx_router.core.worker import MLXWorker
from mlx_router.engine.resource_monitor import ResourceMonitor
from mlx_router.errors import ModelLoadError


class _Rank0Of2:
    """What the pool asks of a RankGroup. MLX's own group is this process alone (size 1: sharding splits
    nothing); the other rank's part of each exchange is `other_ok`."""

    rank, size, leader = 0, 2, True

    def __init__(self, other_ok: bool) -> None:
        self.group = mx.distributed.init()
        self.stream = mx.new_stream(mx.default_device())
        self.other_ok = other_ok
        self.exchanges: list[list[int]] = []

    def exchange(self, row: list[int]) -> list[list[int]]:
        self.exchanges.append(list(row))
        return [list(row), [0 if self.other_ok else 1]]


def _pool(group: _Rank0Of2) -> ModelPool:
    settings = Settings()
    settings.defaults.warmup_tokens = 0
    return ModelPool(settings, MLXWorker(), ResourceMonitor(settings.defaults), group=group)  # type: ignore[arg-type]


def _entry(path: Path) -> ModelEntry:
    return ModelEntry("tiny", path, 1024, 0, "directory")


def test_a_load_another_rank_failed_is_dropped_here_too(random_llm_dir: Path) -> None:
    group = _Rank0Of2(other_ok=False)
    pool = _pool(group)
    with pytest.raises(ModelLoadError, match=r"could not be loaded on rank\(s\) \[1\]"):
        pool.load(_entry(random_llm_dir))
    assert group.exchanges == [[0]]  # this rank's part succeeded
    assert pool.models["tiny"].state == "failed" and pool.runner("tiny") is None
    assert not pool.busy()


def test_a_load_that_fails_here_tells_the_other_ranks(tmp_path: Path) -> None:
    group = _Rank0Of2(other_ok=True)
    pool = _pool(group)
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        pool.load(_entry(tmp_path))
    assert group.exchanges == [[1]]  # the others learn of it and fail the load too


def test_a_load_every_rank_managed_serves(random_llm_dir: Path) -> None:
    group = _Rank0Of2(other_ok=True)
    pool = _pool(group)
    pool.load(_entry(random_llm_dir))
    assert pool.models["tiny"].state == "ready" and pool.runner("tiny") is not None
    assert group.exchanges == [[0]]
    pool.unload_all()
