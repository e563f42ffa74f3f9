"""Which loaded models to unload so that another fits: a pure function, tested by tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolEntry:
    """A loaded model as eviction sees it."""

    model_id: str
    cost_bytes: int
    last_used: float
    busy: bool  # serving requests (or loading): never evicted


def plan_eviction(
    loaded: Sequence[PoolEntry], incoming_bytes: int, budget_bytes: int, max_models: int
) -> list[str] | None:
    """The least recently used idle models to unload so that one more model of `incoming_bytes` fits.

    Returns [] when it fits already, the ids to unload (oldest first) when unloading idle models makes room,
    and None when it cannot fit even after unloading every idle model (busy models stay).
    """
    if incoming_bytes > budget_bytes:
        return None
    used = sum(e.cost_bytes for e in loaded)
    count = len(loaded)
    plan: list[str] = []
    for entry in sorted((e for e in loaded if not e.busy), key=lambda e: e.last_used):
        if used + incoming_bytes <= budget_bytes and count + 1 <= max_models:
            break
        plan.append(entry.model_id)
        used -= entry.cost_bytes
        count -= 1
    if used + incoming_bytes <= budget_bytes and count + 1 <= max_models:
        return plan
    return None
