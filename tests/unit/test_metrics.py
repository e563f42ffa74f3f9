"""Prometheus metrics (observability/metrics.py): the names (vLLM's, with the mlx_router_ prefix), the gauges read
from the server's state, what one ending request adds, and one registry per app."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mlx_router.observability.ids import RequestId
from mlx_router.observability.metrics import RouterMetrics
from mlx_router.observability.requests import RequestRecord, observe

GB = 1024**3

# vLLM's names for the same things (vllm:time_to_first_token_seconds ...), and ours that vLLM has no name for
VLLM_MODELLED = {
    "mlx_router_time_to_first_token_seconds",
    "mlx_router_inter_token_latency_seconds",
    "mlx_router_e2e_request_latency_seconds",
    "mlx_router_request_queue_time_seconds",
    "mlx_router_num_requests_running",
    "mlx_router_num_requests_waiting",
    "mlx_router_kv_cache_usage_perc",
    "mlx_router_prefix_cache_queries",
    "mlx_router_prefix_cache_hits",
    "mlx_router_prompt_tokens",
    "mlx_router_generation_tokens",
    "mlx_router_requests",
}
OURS = {
    "mlx_router_model_memory_bytes",
    "mlx_router_model_state",
    "mlx_router_model_loads",
    "mlx_router_model_evictions",
    "mlx_router_memory_pressure_level",
    "mlx_router_memory_budget_bytes",
    "mlx_router_memory_available_bytes",
    "mlx_router_mlx_memory_bytes",
    "mlx_router_engine_restarts",
    "mlx_router_engine_running",
    "mlx_router_image_requests",
    "mlx_router_images",
}


def _slot(model_id: str, **kw: Any) -> SimpleNamespace:
    fields = dict(
        model_id=model_id,
        running=0,
        refs=0,
        kv_bytes=0,
        prefix_bytes=0,
        cost_bytes=0,
        reserved_kv=0,
        state="stopped",
        loads=0,
    )
    fields.update(kw)
    return SimpleNamespace(**fields)


def _watched(slots: list[SimpleNamespace], pressure: str = "normal", budget: int = 10 * GB) -> RouterMetrics:
    manager = SimpleNamespace(slots=lambda: slots, evictions=Counter({"b": 2}))
    snap = SimpleNamespace(pressure=pressure, available_gb=6.0, mlx_active_gb=3.0, mlx_cache_gb=0.5, mlx_peak_gb=4.0)
    monitor = SimpleNamespace(snapshot=lambda: snap, budget_bytes=lambda: budget)
    client = SimpleNamespace(restarts=1, state="running")
    metrics = RouterMetrics()
    metrics.watch(manager, monitor, client)  # type: ignore[arg-type]
    return metrics


def _scrape(metrics: RouterMetrics) -> tuple[set[str], dict[tuple[str, tuple], float]]:
    names, samples = set(), {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        names.add(family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return names, samples


def test_the_names_are_vllms_with_our_prefix_and_ours_beside_them() -> None:
    names, samples = _scrape(_watched([_slot("a", state="ready")]))
    assert VLLM_MODELLED | OURS <= names
    assert all(name.startswith("mlx_router_") for name, _ in samples)
    assert names == VLLM_MODELLED | OURS  # nothing unnamed here slips in


def test_gauges_come_from_the_models_memory_and_engine() -> None:
    slots = [
        _slot("a", state="ready", running=2, refs=5, kv_bytes=3 * GB, prefix_bytes=1 * GB, cost_bytes=4 * GB, loads=1),
        _slot("b", state="stopped"),
    ]
    _, s = _scrape(_watched(slots, pressure="high", budget=10 * GB))
    a = (("model_name", "a"),)
    assert s[("mlx_router_num_requests_running", a)] == 2
    assert s[("mlx_router_num_requests_waiting", a)] == 3  # admitted, not decoding yet
    memory = {kind: s[("mlx_router_model_memory_bytes", (("kind", kind), *a))] for kind in ("weights", "kv_cache")}
    assert memory == {"weights": 4 * GB, "kv_cache": 2 * GB}  # the prefix cache apart from the running KV
    assert s[("mlx_router_model_memory_bytes", (("kind", "prefix_cache"), *a))] == GB
    assert s[("mlx_router_kv_cache_usage_perc", ())] == 2 / 6  # 2 GB of KV in the 6 GB beside the weights
    assert s[("mlx_router_model_state", (("model_name", "a"), ("state", "ready")))] == 1
    assert s[("mlx_router_model_evictions_total", (("model_name", "b"),))] == 2
    assert s[("mlx_router_model_loads_total", a)] == 1
    assert s[("mlx_router_memory_pressure_level", ())] == 2
    assert s[("mlx_router_mlx_memory_bytes", (("kind", "active"),))] == 3 * GB
    assert s[("mlx_router_engine_restarts_total", ())] == 1 and s[("mlx_router_engine_running", ())] == 1


def _record(outcome: str, engine_took: bool, images: int = 0) -> RequestRecord:
    usage = SimpleNamespace(prompt_tokens=100, cached_tokens=64, completion_tokens=10 if engine_took else 0)
    session = SimpleNamespace(
        outcome=outcome,
        usage=usage,
        request=SimpleNamespace(model_id="m", images=[object()] * images),
        first_token_at=10.5 if engine_took else None,
        last_token_at=11.0 if engine_took else None,
        queue_seconds=0.25 if engine_took else None,
        engine_queue_seconds=0.05 if engine_took else None,
    )
    record = RequestRecord(RequestId("r"), "POST", "/v1/chat/completions", started=10.0, status=200, model="m")
    record.session = session  # type: ignore[assignment]
    return record


def test_an_ended_request_adds_its_counts_and_times() -> None:
    metrics = RouterMetrics()
    observe(metrics, _record("stop", engine_took=True, images=2), "stop", ended=12.0)
    observe(metrics, _record("refused", engine_took=False), "refused", ended=10.1)
    gaps = metrics.token_gaps("m")
    gaps(3, 0.03)  # three tokens that arrived together 30 ms after the last
    _, s = _scrape(metrics)
    m = (("model_name", "m"),)
    assert s[("mlx_router_requests_total", (("finished_reason", "stop"), *m))] == 1
    assert s[("mlx_router_requests_total", (("finished_reason", "refused"), *m))] == 1
    assert s[("mlx_router_e2e_request_latency_seconds_count", m)] == 1  # a refusal has no latency to speak of
    assert s[("mlx_router_e2e_request_latency_seconds_sum", m)] == 2.0
    assert s[("mlx_router_time_to_first_token_seconds_sum", m)] == 0.5
    assert s[("mlx_router_request_queue_time_seconds_sum", m)] == 0.25
    assert s[("mlx_router_prompt_tokens_total", m)] == 100
    assert s[("mlx_router_prefix_cache_queries_total", m)] == 100
    assert s[("mlx_router_prefix_cache_hits_total", m)] == 64
    assert s[("mlx_router_generation_tokens_total", m)] == 10
    assert s[("mlx_router_image_requests_total", m)] == 1 and s[("mlx_router_images_total", m)] == 2
    assert s[("mlx_router_inter_token_latency_seconds_count", m)] == 3
    assert abs(s[("mlx_router_inter_token_latency_seconds_sum", m)] - 0.03) < 1e-9
    assert s[("mlx_router_inter_token_latency_seconds_bucket", (("le", "0.01"), *m))] == 3


def test_each_app_has_its_own_registry() -> None:
    one, two = RouterMetrics(), RouterMetrics()
    observe(one, _record("length", engine_took=True), "length", ended=11.0)
    _, s = _scrape(two)
    assert ("mlx_router_requests_total", (("finished_reason", "length"), ("model_name", "m"))) not in s
