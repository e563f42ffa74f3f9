"""Recent activity as the HTTP side sees it: tokens per second over the last minute and requests by how they
ended, for the dashboard. Fed by `Generation` as events reach the event loop; it never asks the engine."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RATE_WINDOW_S = 5  # tokens per second are averaged over the last few whole seconds: steady, yet live


@dataclass
class _ModelCounts:
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


class Activity:
    """Counts since start and a per-second series of generated tokens (the last `window_s` seconds)."""

    def __init__(self, window_s: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._seconds: deque[list[int]] = deque()  # [whole second, tokens generated in it], oldest first
        self._models: dict[str, _ModelCounts] = {}
        self.started_at = clock()

    def _model(self, model_id: str) -> _ModelCounts:
        counts = self._models.get(model_id)
        if counts is None:
            counts = self._models[model_id] = _ModelCounts()
        return counts

    def request_started(self, model_id: str) -> None:
        self._model(model_id).requests += 1

    def prompt_done(self, model_id: str, prompt_tokens: int, cached_tokens: int) -> None:
        counts = self._model(model_id)
        counts.prompt_tokens += prompt_tokens
        counts.cached_tokens += cached_tokens

    def tokens(self, model_id: str, n: int) -> None:
        if n <= 0:
            return
        self._model(model_id).completion_tokens += n
        now = int(self._clock())
        if self._seconds and self._seconds[-1][0] == now:
            self._seconds[-1][1] += n
        else:
            self._seconds.append([now, n])
        self._trim(now)

    def request_ended(self, model_id: str, outcome: str) -> None:
        """`outcome`: the engine's finish reason (stop, length, error) or `cancelled` (a client gone, a stop
        string, a timeout)."""
        self._model(model_id).outcomes[outcome] += 1

    def _trim(self, now: int) -> None:
        while self._seconds and self._seconds[0][0] <= now - self.window_s:
            self._seconds.popleft()

    def series(self) -> list[int]:
        """Tokens generated in each of the last `window_s` whole seconds, oldest first, the current one last."""
        now = int(self._clock())
        self._trim(now)
        by_second = dict((t, n) for t, n in self._seconds)
        return [by_second.get(t, 0) for t in range(now - self.window_s + 1, now + 1)]

    def snapshot(self) -> dict[str, Any]:
        """What `GET /v1/dashboard/activity` returns."""
        series = self.series()
        # the current second is still filling: the rate comes from the seconds before it
        recent = series[-RATE_WINDOW_S - 1 : -1]
        models = {
            model_id: {
                "requests": c.requests,
                "prompt_tokens": c.prompt_tokens,
                "cached_tokens": c.cached_tokens,
                "completion_tokens": c.completion_tokens,
                "outcomes": dict(c.outcomes),
            }
            for model_id, c in sorted(self._models.items())
        }
        outcomes: Counter[str] = Counter()
        for c in self._models.values():
            outcomes.update(c.outcomes)
        return {
            "uptime_s": round(self._clock() - self.started_at, 1),
            "tokens_per_second": round(sum(recent) / max(1, len(recent)), 1),
            "series_window_s": self.window_s,
            "tokens_per_second_series": series,
            "requests": sum(c.requests for c in self._models.values()),
            "prompt_tokens": sum(c.prompt_tokens for c in self._models.values()),
            "cached_tokens": sum(c.cached_tokens for c in self._models.values()),
            "completion_tokens": sum(c.completion_tokens for c in self._models.values()),
            "outcomes": dict(outcomes),
            "models": models,
        }
