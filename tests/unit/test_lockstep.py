"""What makes a distributed group's ranks agree without a clock or a shared random state (core/lockstep.py),
which rank a launch made this process (config/ranks.py), and prefix-cache entries counted by tokens (the same on
every rank). The two-rank behaviour itself is tests/e2e/test_distributed.py's."""

from __future__ import annotations

import time

import mlx.core as mx
import pytest
from mlx_lm.models.cache import KVCache

from mlx_router.config.ranks import launch_rank
from mlx_router.config.settings import DistributedConfig
from mlx_router.core.lockstep import Lockstep, request_seed
from mlx_router.core.prefix_cache import PrefixCache
from mlx_router.core.worker import MLXWorker
from mlx_router.engine.commands import CancelGeneration, CheckModel, StartGeneration
from mlx_router.engine.params import GenerationRequest, SamplingParams


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, None),
        ({"MLX_RANK": "0"}, 0),
        ({"MLX_RANK": "3", "MLX_HOSTFILE": "h.json"}, 3),
        ({"OMPI_COMM_WORLD_RANK": "1"}, 1),  # mpirun
        ({"PMI_RANK": "2"}, 2),
        ({"MLX_RANK": " "}, None),
    ],
)
def test_the_rank_comes_from_what_the_launcher_set(env: dict[str, str], rank: int | None) -> None:
    assert launch_rank(env) == rank


def test_a_rank_that_is_not_a_number_is_refused_with_its_variable() -> None:
    with pytest.raises(ValueError, match="MLX_RANK='one'"):
        launch_rank({"MLX_RANK": "one"})


class _Rank0:
    """Rank 0 of a group of two, as far as submitting commands goes (no collective operation runs here)."""

    rank, size, leader = 0, 2, True


def _lockstep() -> Lockstep:
    return Lockstep(_Rank0(), DistributedConfig(), MLXWorker(), print, list, print, print, print)  # type: ignore[arg-type]


def _start(rid: str, sampling: SamplingParams, deadline: float | None = None) -> tuple[str, StartGeneration]:
    req = GenerationRequest(rid, "m", [1, 2, 3], 8, sampling=sampling, deadline=deadline)
    return ("post", StartGeneration("m", req))


def test_a_sampled_request_without_a_seed_gets_one_from_its_id_and_no_deadline() -> None:
    step = _lockstep()
    step.submit(_start("a", SamplingParams(temperature=0.7), deadline=time.monotonic() + 60))
    step.submit(_start("b", SamplingParams(temperature=0.7, seed=5)))
    step.submit(_start("c", SamplingParams()))
    sent = [msg[1].request for msg in step._take()]
    assert [r.sampling.seed for r in sent] == [request_seed("a"), 5, None]  # greedy needs none
    assert all(r.deadline is None for r in sent)  # no rank's clock ends a request on its own


def test_request_seeds_are_stable_and_differ_between_requests() -> None:
    assert request_seed("req-1") == request_seed("req-1")
    assert request_seed("req-1") != request_seed("req-2")
    assert 0 <= request_seed("x") < 2**63


def test_a_deadline_becomes_a_timeout_cancellation_sent_to_every_rank() -> None:
    step = _lockstep()
    step.submit(_start("late", SamplingParams(), deadline=time.monotonic() - 1))
    step.submit(_start("fine", SamplingParams(), deadline=time.monotonic() + 60))
    step.submit(_start("gone", SamplingParams(), deadline=time.monotonic() - 1))
    step.submit(("post", CancelGeneration("m", "gone")))  # cancelled first: no timeout for it
    msgs = step._take()
    assert [type(m[1]).__name__ for m in msgs[:4]] == ["StartGeneration"] * 3 + ["CancelGeneration"]
    assert msgs[4:] == [("post", CancelGeneration("m", "late", reason="timeout"))]
    assert step._take() == []  # once


def test_commands_go_out_in_the_order_they_came() -> None:
    step = _lockstep()
    check = ("call", 7, CheckModel(entry=None))  # type: ignore[arg-type]
    step.submit(check)
    step.submit(("post", CancelGeneration("m", "x")))
    assert step._take() == [check, ("post", CancelGeneration("m", "x"))]


def _kv(n: int) -> list[KVCache]:
    c = KVCache()
    keys = mx.zeros((1, 2, n, 4))
    c.update_and_fetch(keys, keys)
    return [c]


def test_prefix_entries_counted_by_tokens_are_kept_and_dropped_by_tokens() -> None:
    # a pipeline's ranks hold different layers: counted by their arrays they would drop different entries
    pc = PrefixCache("m", max_bytes=100 * 10, min_tokens=4, bytes_per_token=10)
    pc.store(list(range(1, 41)), _kv(40))
    assert pc.nbytes == 400
    pc.store(list(range(100, 150)), _kv(50))
    assert pc.nbytes == 900
    pc.store(list(range(200, 230)), _kv(30))  # 1,200 > 1,000: the oldest goes
    assert pc.nbytes == 800 and len(pc) == 2
