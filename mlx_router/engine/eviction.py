"""Which loaded models to unload so that another model, or more KV cache, fits: pure functions, tested by tables.

The HTTP side plans with them (it alone knows which models hold admitted requests, `engine/manager.py`), and the
engine checks the plan it is sent against what it holds (`core/pool.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Limit = Literal["budget", "cache_size", "memory"]


@dataclass(frozen=True)
class PoolEntry:
    """A loaded model as eviction sees it."""

    model_id: str
    cost_bytes: int  # what it holds: weights x margin, the KV caches its requests may grow to, its prefix cache
    last_used: float
    busy: bool  # holding admitted requests, or loading: never evicted


@dataclass(frozen=True)
class RoomPlan:
    """What making room takes: the idle models to unload (least recently used first), or the limit that
    refuses it even with every idle model unloaded.

    `budget`: the newcomer alone is larger than the whole budget; `cache_size`: every slot is held by a busy
    model; `memory`: the busy models leave too little of the budget.
    """

    evict: list[str] = field(default_factory=list)
    limit: Limit | None = None
    busy_bytes: int = 0  # held by the models that cannot be evicted (for the refusal's message)
    busy_models: tuple[str, ...] = ()


def plan_room(loaded: Sequence[PoolEntry], incoming_bytes: int, budget_bytes: int, max_models: int) -> RoomPlan:
    """Unload idle models, least recently used first, until one more model of `incoming_bytes` fits in the
    budget and in `max_models` (`cache_size`). Busy models always stay."""
    busy = [e for e in loaded if e.busy]
    busy_bytes = sum(e.cost_bytes for e in busy)
    busy_ids = tuple(e.model_id for e in busy)
    if incoming_bytes > budget_bytes:
        return RoomPlan(limit="budget", busy_bytes=busy_bytes, busy_models=busy_ids)
    used = sum(e.cost_bytes for e in loaded)
    count = len(loaded)
    plan: list[str] = []
    for entry in sorted((e for e in loaded if not e.busy), key=lambda e: e.last_used):
        if used + incoming_bytes <= budget_bytes and count + 1 <= max_models:
            break
        plan.append(entry.model_id)
        used -= entry.cost_bytes
        count -= 1
    if count + 1 > max_models:
        return RoomPlan(limit="cache_size", busy_bytes=busy_bytes, busy_models=busy_ids)
    if used + incoming_bytes > budget_bytes:
        return RoomPlan(limit="memory", busy_bytes=busy_bytes, busy_models=busy_ids)
    return RoomPlan(evict=plan, busy_bytes=busy_bytes, busy_models=busy_ids)


def plan_eviction(
    loaded: Sequence[PoolEntry], incoming_bytes: int, budget_bytes: int, max_models: int
) -> list[str] | None:
    """The least recently used idle models to unload so that one more model of `incoming_bytes` fits.

    Returns [] when it fits already, the ids to unload (oldest first) when unloading idle models makes room,
    and None when it cannot fit even after unloading every idle model (busy models stay).
    """
    plan = plan_room(loaded, incoming_bytes, budget_bytes, max_models)
    return None if plan.limit is not None else plan.evict
