"""A request's id, and the one line (and the metrics) written when it ends, however it ends.

Every HTTP request gets an id: the client's `X-Request-ID` when it is a sane one (1 to 128 letters, digits and
`._:-`), else a new one; the response carries it back in `X-Request-ID`. A generation's response id is the id
with the API's prefix (`chatcmpl-<id>`), and so is its id in the engine's log lines, with a suffix when the
client chose the id (a client may send the same id twice at once; the engine's ids must be unique).

The end line reads

  <id> POST /v1/chat/completions 200 stop model=m prompt=12 cached=0 completion=16 ttft=0.041s tok/s=212.3 time=0.12s

with the outcome after the status: stop, length, cancelled (the client left), timeout, error, refused (429/503
before any work), invalid (another 4xx). Requests for health and metrics, which pollers send all day, end at
debug level. With `server.log_json` the same fields go to the JSON log under `request`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from mlx_router.observability.ids import HEADER, RequestId
from mlx_router.observability.metrics import RouterMetrics
from mlx_router.serving.session import GenerationSession, status_outcome

logger = logging.getLogger(__name__)

__all__ = ["HEADER", "RequestId", "RequestRecord", "finish"]

QUIET_PATHS = frozenset({"/health", "/v1/health", "/metrics", "/v1/dashboard/activity", "/v1/dashboard/logs"})


@dataclass
class RequestRecord:
    """One HTTP request as its end line sees it; the routes that generate attach their model and session."""

    id: RequestId
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    status: int | None = None  # the response's, once it started
    model: str | None = None  # as the client named it
    session: GenerationSession | None = None

    def attach(self, session: GenerationSession, metrics: RouterMetrics | None) -> None:
        """The generation this request runs: its tokens, times and outcome go into the end line and metrics."""
        self.session = session
        if metrics is not None:
            session.on_tokens = metrics.token_gaps(session.request.model_id)

    def outcome(self) -> str | None:
        """How it ended: the session's outcome, else from the status (None: a plain request that succeeded)."""
        s = self.session
        if s is not None and s.outcome is not None:
            return s.outcome
        if self.status is None:
            return "cancelled"  # no response started: the client left (or the app failed, logged apart)
        if self.status >= 400:
            return status_outcome(self.status, admitted=False)
        return "cancelled" if s is not None else None  # a generation that stopped short without an error


def finish(record: RequestRecord, metrics: RouterMetrics | None) -> None:
    """Write the end line and record the metrics of a request that just ended."""
    ended = time.monotonic()
    fields = end_fields(record, ended)
    level = logging.DEBUG if record.path in QUIET_PATHS else logging.INFO
    if logger.isEnabledFor(level):
        logger.log(level, end_line(fields), extra={"request": fields})
    if metrics is not None and (record.session is not None or record.model is not None):
        observe(metrics, record, fields["outcome"], ended)


def end_fields(record: RequestRecord, ended: float) -> dict[str, Any]:
    """What the end line says, as plain values (the JSON log's `request`)."""
    fields: dict[str, Any] = {
        "id": record.id.value,
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "outcome": record.outcome(),
        "seconds": round(ended - record.started, 4),
    }
    s = record.session
    if record.model is not None or s is not None:
        fields["model"] = s.request.model_id if s is not None else record.model
    if s is None:
        return fields
    fields["prompt_tokens"] = s.usage.prompt_tokens
    if s.engine_queue_seconds is not None or s.usage.completion_tokens:  # the engine took it
        fields.update(cached_tokens=s.usage.cached_tokens, completion_tokens=s.usage.completion_tokens)
    if s.request.images:
        fields["images"] = len(s.request.images)
    if s.first_token_at is not None:
        fields["ttft_seconds"] = round(s.first_token_at - record.started, 4)
        decode = (s.last_token_at or s.first_token_at) - s.first_token_at
        if s.usage.completion_tokens > 2 and decode > 0:  # two tokens apart may come in one read of the pipe
            fields["tokens_per_second"] = round((s.usage.completion_tokens - 1) / decode, 1)
    if s.queue_seconds is not None:
        fields["queue_seconds"] = round(s.queue_seconds, 4)
    return fields


def end_line(fields: dict[str, Any]) -> str:
    """The fields as one line of text (see the module docstring)."""
    head = f"{fields['id']} {fields['method']} {fields['path']} {fields['status'] or '-'}"
    if fields["outcome"] is not None:
        head += f" {fields['outcome']}"
    parts = [head]
    if "model" in fields:
        parts.append(f"model={_shown(fields['model'])}")
    for key, name in (("prompt_tokens", "prompt"), ("cached_tokens", "cached"), ("completion_tokens", "completion")):
        if key in fields:
            parts.append(f"{name}={fields[key]}")
    if "images" in fields:
        parts.append(f"images={fields['images']}")
    if "queue_seconds" in fields:
        parts.append(f"queue={fields['queue_seconds']:.3f}s")
    if "ttft_seconds" in fields:
        parts.append(f"ttft={fields['ttft_seconds']:.3f}s")
    if "tokens_per_second" in fields:
        parts.append(f"tok/s={fields['tokens_per_second']:.1f}")
    parts.append(f"time={fields['seconds']:.3f}s")
    return " ".join(parts)


def observe(metrics: RouterMetrics, record: RequestRecord, outcome: str, ended: float) -> None:
    """The request's counters and histograms (a generation request's; the gauges are read at scrape time)."""
    s = record.session
    model = s.request.model_id if s is not None else ""  # a name the server never resolved is no label
    metrics.requests.labels(model, outcome).inc()
    if s is None or outcome in ("refused", "invalid") and s.engine_queue_seconds is None:
        return  # refused before any work: no latency to speak of
    metrics.e2e_request_latency.labels(model).observe(ended - record.started)
    if s.first_token_at is not None:
        metrics.time_to_first_token.labels(model).observe(s.first_token_at - record.started)
    if s.queue_seconds is not None:
        metrics.request_queue_time.labels(model).observe(s.queue_seconds)
    if s.engine_queue_seconds is not None:  # the engine took the prompt (and looked it up in the prefix cache)
        usage = s.usage
        metrics.prompt_tokens.labels(model).inc(usage.prompt_tokens)
        metrics.prefix_cache_queries.labels(model).inc(usage.prompt_tokens)
        metrics.prefix_cache_hits.labels(model).inc(usage.cached_tokens)
    metrics.generation_tokens.labels(model).inc(s.usage.completion_tokens)
    if s.request.images:
        metrics.image_requests.labels(model).inc()
        metrics.images.labels(model).inc(len(s.request.images))


def _shown(name: str) -> str:
    """A model name as the client sent it, safe on one line of the log."""
    text = name if name.isprintable() and " " not in name else repr(name)
    return text[:120]
