"""Eviction is a pure function: least recently used idle models go first; busy models never."""

import pytest

from mlx_router.engine.eviction import PoolEntry, plan_eviction, plan_room

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


@pytest.mark.parametrize(
    "loaded, incoming, budget, max_models, evict, limit",
    [
        # the newcomer alone is larger than the budget: no eviction helps
        ([e("a", 1, 1)], 11, 10, 2, [], "budget"),
        # every slot is held by a busy model: cache_size, whatever the memory
        ([e("a", 1, 1, busy=True)], 1, 100, 1, [], "cache_size"),
        ([e("a", 1, 1, busy=True), e("b", 1, 2)], 1, 100, 2, ["b"], None),
        # slots are free but the busy models hold the memory
        ([e("a", 8, 1, busy=True), e("b", 1, 2)], 4, 10, 3, [], "memory"),
        # an idle model is room: the KV a request needs counts like a model's weights (issue 20, item 10)
        ([e("x", 544, 1)], 417 + 140, 600, 2, ["x"], None),
        ([e("x", 544, 1, busy=True)], 417 + 140, 600, 2, [], "memory"),
        # only as many idle models go as needed, oldest first
        ([e("a", 3, 3), e("b", 3, 1), e("c", 3, 2)], 3, 10, 4, ["b"], None),
    ],
)
def test_room_plans_name_the_limit(loaded, incoming, budget, max_models, evict, limit):
    plan = plan_room(loaded, incoming, budget, max_models)
    assert (plan.evict, plan.limit) == (evict, limit)
    assert plan.busy_models == tuple(x.model_id for x in loaded if x.busy)
