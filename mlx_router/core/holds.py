"""When newcomers start their prefill: the two holds that gather a burst's requests into one prefill group.

A burst's requests reach the engine some milliseconds apart, and each prefill group is a whole forward pass, so
starting every arrival at once splits a burst into groups. Both holds are pure functions of what waits: its
prompt tokens not yet cached, when each request arrived, and whether any of its work has begun.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BURST_HOLD_LIMIT = 4  # an idle model's burst hold ends this many `idle_gather_ms` after its first arrival


@dataclass(frozen=True)
class Newcomer:
    pending: int  # prompt tokens not yet in its cache
    arrived: float  # time.perf_counter() when the runner took it
    fresh: bool = True  # nothing of it has run yet


def burst_hold(
    gap_ms: float,
    held: Sequence[Newcomer],
    group_prompts: int,
    group_tokens: int,
    now: float,
    min_tokens: int = 0,
) -> float:
    """Seconds the requests of an idle model still wait for the rest of their burst (0: start now).

    Started at once, the first is prefilled alone and the others, arriving during that forward pass, as a group
    after it, each then moved into the batch by a forward pass and a merge of caches of its own (the 8B at 8
    streams on an H200: a 30 ms solo prefill, then steps of 181, 54 and 58 ms before the seven had their first
    tokens, 337 ms at the client). Held until none has arrived for `gap_ms` (at most `BURST_HOLD_LIMIT` times that
    from the first arrival), they start as one group; a full group starts at once. A lone request waits one gap,
    unless what it has left to prefill is under `min_tokens` (a prefix-cache hit, a short question): a forward
    pass that short costs a follower about a decode step, and the hold would only delay this request (a chat's
    second turn on the 0.5B on an H200: 10 ms of its 40 ms to the first token)."""
    gap = gap_ms / 1000
    if gap <= 0 or not held or any(not n.fresh for n in held):
        return 0.0  # off, nothing waits, or its work has begun
    pending = sum(n.pending for n in held)
    if len(held) >= group_prompts or pending >= group_tokens or pending < min_tokens:
        return 0.0
    first = min(n.arrived for n in held)
    last = max(n.arrived for n in held)
    return max(0.0, min(last + gap, first + BURST_HOLD_LIMIT * gap) - now)


def gathering(gather_ms: float, waiting: Sequence[Newcomer], group_tokens: int, now: float) -> bool:
    """Whether newcomers that find the batch decoding wait one more step for the rest of their burst: up to
    `gather_ms` from the oldest's arrival, and not once a full prefill group's worth of prompt tokens waits."""
    if gather_ms <= 0 or not waiting or sum(n.pending for n in waiting) >= group_tokens:
        return False
    return 1000 * (now - waiting[0].arrived) < gather_ms
