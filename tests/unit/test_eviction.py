"""Eviction is a pure function: least recently used idle models go first; busy models never."""

import pytest

from mlx_router.core.eviction import PoolEntry, plan_eviction

GB = 1


def e(name, cost, used, busy=False):
    return PoolEntry(name, cost, used, busy)


@pytest.mark.parametrize(
    "loaded, incoming, budget, max_models, expected",
    [
        ([], 4, 10, 2, []),
        ([e("a", 4, 1)], 4, 10, 2, []),
        ([e("a", 4, 1), e("b", 4, 2)], 4, 10, 3, ["a"]),
        ([e("a", 4, 2), e("b", 4, 1)], 4, 10, 3, ["b"]),
        ([e("a", 4, 1), e("b", 4, 2)], 4, 100, 2, ["a"]),
        ([e("a", 4, 1, busy=True), e("b", 4, 2)], 4, 10, 3, ["b"]),
        ([e("a", 4, 1, busy=True), e("b", 4, 2, busy=True)], 4, 10, 3, None),
        ([e("a", 1, 1), e("b", 1, 2), e("c", 7, 3)], 5, 10, 4, ["a", "b", "c"]),
        ([], 11, 10, 2, None),
        ([e("a", 2, 1), e("b", 2, 2)], 2, 100, 1, ["a", "b"]),
    ],
)
def test_plan(loaded, incoming, budget, max_models, expected):
    assert plan_eviction(loaded, incoming, budget, max_models) == expected
