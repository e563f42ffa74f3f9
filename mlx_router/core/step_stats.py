"""Where a runner's time goes: decode steps, prefill and handing tokens on, logged at most every `period` s.

The line reads like `decode 63.1 tok/step, 17.2 ms/step; deliver 1.1 ms/step; prefill 3 prompts 812 tokens
in 240 ms`, enough to tell a slow model from a slow server without a profiler.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class StepStats:
    model_id: str
    period: float = 10.0
    steps: int = 0
    tokens: int = 0
    decode_s: float = 0.0
    deliver_s: float = 0.0
    prefill_s: float = 0.0
    prefill_prompts: int = 0
    prefill_tokens: int = 0
    _since: float = field(default_factory=time.perf_counter)

    def decoded(self, tokens: int, decode_s: float, deliver_s: float) -> None:
        self.steps += 1
        self.tokens += tokens
        self.decode_s += decode_s
        self.deliver_s += deliver_s

    def prefilled(self, prompts: int, tokens: int, seconds: float) -> None:
        self.prefill_prompts += prompts
        self.prefill_tokens += tokens
        self.prefill_s += seconds

    def maybe_log(self) -> None:
        now = time.perf_counter()
        elapsed = now - self._since
        if elapsed < self.period:
            return
        if self.steps or self.prefill_prompts:
            logger.info("%s over %.1f s: %s", self.model_id, elapsed, self.summary())
        self.steps = self.tokens = self.prefill_prompts = self.prefill_tokens = 0
        self.decode_s = self.deliver_s = self.prefill_s = 0.0
        self._since = now

    def summary(self) -> str:
        steps = max(self.steps, 1)
        return (
            f"{self.steps} steps, {self.tokens / steps:.1f} tok/step, decode {1000 * self.decode_s / steps:.1f} "
            f"ms/step, deliver {1000 * self.deliver_s / steps:.2f} ms/step; prefill {self.prefill_prompts} "
            f"prompts, {self.prefill_tokens} tokens in {1000 * self.prefill_s:.0f} ms"
        )


def trace_added(req: Any, cached: int, where: str, waiting: int, in_batch: int) -> None:
    """A request taken by a runner (debug level), with how long after the HTTP side received it."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    logger.debug(
        "%s added %.1f ms after it was received: %d prompt tokens (%d cached), %s; %d waiting, %d in the batch",
        req.request_id,
        1000 * (time.monotonic() - req.received) if req.received else -1.0,
        len(req.prompt_tokens),
        cached,
        where,
        waiting,
        in_batch,
    )


def trace_step(step: int, seconds: float, work: Any, rows: int, prompts_done: int, t1: float, waiting: int) -> None:
    """One line per batch step (debug level): with the log's timestamps, enough to lay a burst's arrivals,
    prefill groups and decode steps on one time line (bench/trace.py reads it)."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    logger.debug(
        "step %d: %.1f ms: decode %d rows %.1f ms, prefill %d tokens %.1f ms (%d prompts done), "
        "deliver %.2f ms, %d waiting",
        step,
        1000 * seconds,
        rows,
        1000 * work.decode_time,
        work.prompt_tokens,
        1000 * work.prompt_time,
        prompts_done,
        1000 * (time.perf_counter() - t1),
        waiting,
    )
