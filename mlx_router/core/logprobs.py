"""Log-probabilities of the sampled tokens (and the top k alternatives), for the requests that ask."""

from __future__ import annotations

from typing import Any, cast

import mlx.core as mx

from mlx_router.engine.params import TokenLogprob


def token_logprobs(rows: list[tuple[Any, int]]) -> list[TokenLogprob]:
    """For each (response with `.token` and a 1-D `.logprobs` row, k): the chosen token's log-probability and
    the k most likely tokens, highest first. One evaluation for all rows."""
    if not rows:
        return []
    chosen = mx.stack([r.logprobs[r.token] for r, _ in rows])
    tops: list[tuple[Any, Any] | None] = []
    for r, k in rows:
        if k > 0:
            idx = mx.argpartition(-r.logprobs, kth=k - 1)[:k]
            tops.append((idx, r.logprobs[idx]))
        else:
            tops.append(None)
    mx.eval(chosen, [t for t in tops if t is not None])
    out = []
    for (r, _), value, top in zip(rows, cast(list[float], chosen.tolist()), tops, strict=True):
        pairs: list[tuple[int, float]] = []
        if top is not None:
            pairs = sorted(zip(top[0].tolist(), top[1].tolist(), strict=True), key=lambda x: -x[1])
        out.append(TokenLogprob(token=r.token, logprob=value, top=pairs))
    return out
