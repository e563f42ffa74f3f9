"""Prometheus metrics, named after vLLM's (the closest thing to a standard among LLM servers) with the
`mlx_router_` prefix, plus what vLLM has no name for: per-model memory, memory pressure, evictions, engine
restarts and images.

Each app has its own `CollectorRegistry` (held by `RouterMetrics` on the services): nothing is module-level,
and tests build as many apps as they like. Request metrics are observed on the HTTP side as requests end
(`observability/requests.py`); the gauges are read at scrape time from the engine's latest report and the
memory monitor, so a scrape never waits on MLX.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mlx_router.engine.client import EngineClient
from mlx_router.engine.manager import MLXModelManager
from mlx_router.engine.resource_monitor import GB, ResourceMonitor

PREFIX = "mlx_router_"
MODEL = "model_name"  # vLLM's label for the model

# vLLM's buckets; inter-token latency also gets finer ones below 10 ms, where small MLX models decode.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
               2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                   120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
PRESSURE_LEVELS = {"normal": 0, "moderate": 1, "high": 2, "critical": 3}


class RouterMetrics:
    """The registry of one app and the request metrics observed into it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r, m = self.registry, [MODEL]
        self.time_to_first_token = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Seconds from the request's arrival to its first generated token.",
            m,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            PREFIX + "inter_token_latency_seconds",
            "Seconds between two generated tokens of one request, as the server receives them from the engine.",
            m,
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.e2e_request_latency = Histogram(
            PREFIX + "e2e_request_latency_seconds",
            "Seconds from a generation request's arrival to its end (any end but a refusal before admission).",
            m,
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.request_queue_time = Histogram(
            PREFIX + "request_queue_time_seconds",
            "Seconds an admitted request waited before its prefill began: for its model to load, for the engine, "
            "and in the model's queue.",
            m,
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            PREFIX + "prompt_tokens", "Prompt tokens of requests the engine took.", m, registry=r
        )
        self.generation_tokens = Counter(PREFIX + "generation_tokens", "Tokens generated.", m, registry=r)
        self.prefix_cache_queries = Counter(
            PREFIX + "prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", m, registry=r
        )
        self.prefix_cache_hits = Counter(
            PREFIX + "prefix_cache_hits",
            "Prompt tokens found in the prefix cache (not prefilled again).",
            m,
            registry=r,
        )
        self.requests = Counter(
            PREFIX + "requests",
            "Generation requests by how they ended: stop, length, cancelled (client gone), timeout, error, refused "
            "(429/503 before any work), invalid (4xx); model_name is empty when no model was chosen.",
            [MODEL, "finished_reason"],
            registry=r,
        )
        self.image_requests = Counter(PREFIX + "image_requests", "Generation requests with images.", m, registry=r)
        self.images = Counter(PREFIX + "images", "Images (PDF pages included) in generation requests.", m, registry=r)

    def token_gaps(self, model_id: str) -> Callable[[int, float], None]:
        """What a session calls when `n` tokens arrive `seconds` after the previous ones."""
        histogram = self.inter_token_latency.labels(model_id)

        def observe(n: int, seconds: float) -> None:
            for _ in range(n):  # tokens that arrived together shared the wait
                histogram.observe(seconds / n)

        return observe

    def watch(self, manager: MLXModelManager, monitor: ResourceMonitor, client: EngineClient) -> None:
        """Add the gauges read at scrape time from the server's state."""
        self.registry.register(ServerStateCollector(manager, monitor, client))

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (0.0.4)."""
        return generate_latest(self.registry)


@dataclass(eq=False)  # a registry keys its collectors by identity
class ServerStateCollector:
    """Models, memory and the engine as the HTTP side knows them (the engine's last report; no MLX call)."""

    manager: MLXModelManager
    monitor: ResourceMonitor
    client: EngineClient

    def collect(self) -> Iterable[Metric]:
        slots = self.manager.slots()
        running = GaugeMetricFamily(PREFIX + "num_requests_running", "Requests decoding in the engine.", labels=[MODEL])
        waiting = GaugeMetricFamily(
            PREFIX + "num_requests_waiting",
            "Admitted requests not decoding yet: waiting for their model to load, for the engine, or in prefill.",
            labels=[MODEL],
        )
        memory = GaugeMetricFamily(
            PREFIX + "model_memory_bytes",
            "Memory of each loaded model by kind: weights (as budgeted: weights x safety_margin), kv_cache (its "
            "running requests'), prefix_cache (prompt caches kept for reuse), kv_reserved (reserved at admission).",
            labels=[MODEL, "kind"],
        )
        state = GaugeMetricFamily(
            PREFIX + "model_state",
            "1 for each model's state (stopped, loading, ready, unloading, failed).",
            labels=[MODEL, "state"],
        )
        loads = CounterMetricFamily(
            PREFIX + "model_loads", "Loads of each model since the engine started.", labels=[MODEL]
        )
        evictions = CounterMetricFamily(
            PREFIX + "model_evictions", "Models unloaded to make room or under memory pressure.", labels=[MODEL]
        )
        kv_active = weights = 0
        for slot in slots:
            running.add_metric([slot.model_id], slot.running)
            waiting.add_metric([slot.model_id], max(0, slot.refs - slot.running))
            kv = max(0, slot.kv_bytes - slot.prefix_bytes)
            for kind, value in (
                ("weights", slot.cost_bytes),
                ("kv_cache", kv),
                ("prefix_cache", slot.prefix_bytes),
                ("kv_reserved", slot.reserved_kv),
            ):
                memory.add_metric([slot.model_id, kind], value)
            state.add_metric([slot.model_id, slot.state], 1)
            loads.add_metric([slot.model_id], slot.loads)
            evictions.add_metric([slot.model_id], self.manager.evictions.get(slot.model_id, 0))
            kv_active += kv
            weights += slot.cost_bytes
        yield from (running, waiting, memory, state, loads, evictions)
        yield from self._memory(kv_active, weights)
        yield from self._engine()

    def _memory(self, kv_active: int, weights: int) -> Iterable[Metric]:
        snap = self.monitor.snapshot()
        budget = self.monitor.budget_bytes()
        room = budget - weights
        usage = 0.0 if kv_active == 0 else (min(1.0, kv_active / room) if room > 0 else 1.0)
        yield GaugeMetricFamily(
            PREFIX + "kv_cache_usage_perc",
            "KV caches of running requests as a fraction of the memory budget left beside the loaded weights "
            "(1 = full).",
            value=usage,
        )
        yield GaugeMetricFamily(
            PREFIX + "memory_pressure_level",
            "Memory pressure: 0 normal, 1 moderate, 2 high (idle models unloaded), 3 critical (new requests 503).",
            value=PRESSURE_LEVELS.get(snap.pressure, 0),
        )
        yield GaugeMetricFamily(PREFIX + "memory_budget_bytes", "Memory the models may use in all.", value=budget)
        yield GaugeMetricFamily(
            PREFIX + "memory_available_bytes", "The system's available memory.", value=int(snap.available_gb * GB)
        )
        mlx = GaugeMetricFamily(
            PREFIX + "mlx_memory_bytes",
            "MLX's memory in the engine: active, cache (freed, kept for reuse), peak.",
            labels=["kind"],
        )
        for kind, gb in (("active", snap.mlx_active_gb), ("cache", snap.mlx_cache_gb), ("peak", snap.mlx_peak_gb)):
            mlx.add_metric([kind], int(gb * GB))
        yield mlx

    def _engine(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            PREFIX + "engine_restarts", "Engine processes started again after one exited.", value=self.client.restarts
        )
        yield GaugeMetricFamily(
            PREFIX + "engine_running", "1 while the engine runs (0: restarting, failed or stopped).",
            value=1 if self.client.state == "running" else 0,
        )  # fmt: skip
