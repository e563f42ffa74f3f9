"""Logs and metrics of a real server (issue 17): every request's id comes back in `X-Request-ID` and in the
response id; each request ends with exactly one line in the rotating log files (ok, cancelled, refused, 400),
the engine process's records reach the same files, and /metrics counts it all in Prometheus' format."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import base_config
from tests.server_process import RouterServer

KEY = "e2e-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PROMPT = "Tell me a long story about the sea, the wind, the ships and the people who sail them. " * 3  # cached
MAX_BYTES = 1024  # the start-up alone fills several files (4 KB was borderline: ~15 lines of ~250 bytes)


def _chat(max_tokens: int = 6, **extra: object) -> dict:
    body = {
        "model": "tiny-a",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "ignore_eos": True,  # every answer is max_tokens long
    }
    body.update(extra)
    return body


def _log_text(folder: Path, name: str) -> str:
    """Every rotated file of one log, oldest first."""
    files = sorted(folder.glob(name + "*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    return "".join(p.read_text() for p in files)


def _end_lines(text: str, request_id: str) -> list[str]:
    return [line for line in text.splitlines() if f" mlx_router.observability.requests: {request_id} " in line]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def logged_server(models_root: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("logs-metrics")
    config = base_config(models_root, max_running_requests=1, max_queued_requests=0, timeout=60)
    config["server"] = {
        "api_keys": [KEY],
        "log_dir": str(folder / "logs"),
        "log_max_mb": MAX_BYTES / 1024**2,
        "log_backup_count": 50,
        "log_json": True,
        "log_level": "debug",  # the engine's per-request lines are at debug level
    }
    with RouterServer(folder / "srv", config) as srv:
        yield srv, folder / "logs"


def test_requests_end_in_one_log_line_each_and_in_the_metrics(logged_server) -> None:
    srv, logs = logged_server
    url = srv.base_url + "/v1/chat/completions"
    with httpx.Client(timeout=60, headers=AUTH) as http:
        ok = http.post(url, json=_chat(), headers={"X-Request-ID": "e2e-ok-1"})
        assert ok.status_code == 200, ok.text
        assert ok.headers["x-request-id"] == "e2e-ok-1"
        assert ok.json()["id"] == "chatcmpl-e2e-ok-1"

        with http.stream("POST", url, json=_chat(stream=True)) as streamed:  # no id sent: one is made
            generated = streamed.headers["x-request-id"]
            events = [line[6:] for line in streamed.iter_lines() if line.startswith("data: ")]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        assert json.loads(events[0])["id"] == f"chatcmpl-{generated}" and events[-1] == "[DONE]"

        # A long stream holds the model's only slot; a request beside it is refused (429); then its client
        # leaves mid-stream and the server cancels it.
        long = _chat(max_tokens=1500, stream=True)
        with http.stream("POST", url, json=long, headers={"X-Request-ID": "e2e-cancel"}) as cancelled:
            lines = cancelled.iter_lines()
            while not re.search(r'"content":"[^"]', next(lines)):  # past the role chunk: a token arrived
                pass
            refused = http.post(url, json=_chat(), headers={"X-Request-ID": "e2e-refused"})
            assert refused.status_code == 429, (refused.status_code, refused.text, refused.headers)
            assert refused.headers["x-request-id"] == "e2e-refused"

        bad = http.post(url, json=_chat(tool_choice="required"), headers={"X-Request-ID": "e2e-bad"})
        assert bad.status_code == 400 and bad.headers["x-request-id"] == "e2e-bad"
        odd = http.post(url, json={"model": "tiny-a"}, headers={"X-Request-ID": "not/a sane id"})
        assert odd.status_code == 400 and re.fullmatch(r"[0-9a-f]{32}", odd.headers["x-request-id"])

        assert httpx.get(srv.base_url + "/metrics").status_code == 401  # metrics_public is false
        deadline = time.monotonic() + 10
        while True:  # the cancelled request ends on the server a moment after its client left
            metrics = http.get(srv.base_url + "/metrics")
            samples = _samples(metrics.text)
            if _value(samples, "mlx_router_requests_total", model_name="tiny-a", finished_reason="cancelled"):
                break
            assert time.monotonic() < deadline, metrics.text
            time.sleep(0.2)
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    _check_metrics(samples)
    _check_logs(logs, generated)


def _check_metrics(samples: dict) -> None:
    ends = {
        reason: _value(samples, "mlx_router_requests_total", model_name="tiny-a", finished_reason=reason)
        for reason in ("stop", "length", "cancelled", "refused")
    }
    assert ends["length"] == 2 and ends["cancelled"] == 1 and ends["refused"] == 1, ends
    assert _value(samples, "mlx_router_requests_total", model_name="", finished_reason="invalid") == 1
    m = {"model_name": "tiny-a"}
    assert _value(samples, "mlx_router_time_to_first_token_seconds_count", **m) == 3  # ok, streamed, cancelled
    assert _value(samples, "mlx_router_e2e_request_latency_seconds_count", **m) == 3
    assert _value(samples, "mlx_router_request_queue_time_seconds_count", **m) == 3
    generated = _value(samples, "mlx_router_generation_tokens_total", **m)
    assert generated > 12  # 2 x 6, and the cancelled stream's first tokens
    gaps = _value(samples, "mlx_router_inter_token_latency_seconds_count", **m)
    assert 0 < gaps <= generated - 3  # a request's first token follows no other
    prompt = _value(samples, "mlx_router_prompt_tokens_total", **m)
    assert prompt > 0 and _value(samples, "mlx_router_prefix_cache_queries_total", **m) == prompt
    assert _value(samples, "mlx_router_prefix_cache_hits_total", **m) > 0  # the same prompt, three times
    assert _value(samples, "mlx_router_num_requests_running", **m) == 0
    assert _value(samples, "mlx_router_num_requests_waiting", **m) == 0
    assert _value(samples, "mlx_router_model_memory_bytes", kind="weights", **m) > 0
    assert _value(samples, "mlx_router_model_state", state="ready", **m) == 1
    assert _value(samples, "mlx_router_model_loads_total", **m) == 1
    assert ("mlx_router_memory_pressure_level", ()) in samples
    assert _value(samples, "mlx_router_engine_restarts_total") == 0
    assert _value(samples, "mlx_router_engine_running") == 1
    assert all(name.startswith("mlx_router_") for name, _ in samples)


def _check_logs(logs: Path, generated: str) -> None:
    main = _log_text(logs, "mlx_router.log")
    assert (logs / "mlx_router.log.1").exists(), "the main log never rotated"
    for path in logs.glob("mlx_router.log*"):
        assert path.stat().st_size <= MAX_BYTES + 4096  # a file rotates before the record that would pass it
    (ok,) = _end_lines(main, "e2e-ok-1")
    assert " POST /v1/chat/completions 200 " in ok and "model=tiny-a prompt=" in ok and "ttft=" in ok, ok
    assert " 200 length model=tiny-a " in ok and " completion=6 " in ok and "tok/s=" in ok, ok
    (streamed,) = _end_lines(main, generated)
    assert " 200 length model=tiny-a " in streamed, streamed
    (cancelled,) = _end_lines(main, "e2e-cancel")
    assert " 200 cancelled model=tiny-a " in cancelled, cancelled
    (refused,) = _end_lines(main, "e2e-refused")
    assert " 429 refused model=tiny-a " in refused, refused
    (bad,) = _end_lines(main, "e2e-bad")
    assert " 400 invalid model=tiny-a " in bad and "prompt=" not in bad, bad
    # The engine process's records reach the server's files: its load line, and its lines about a request
    # carry the request's id.
    assert re.search(r" INFO mlx_router\.core\.loader: loaded tiny-a in ", main)
    assert re.search(r" DEBUG mlx_router\.core\.runner: chatcmpl-e2e-ok-1\.[0-9a-f]{6}: ", main)
    errors = _log_text(logs, "mlx_router.error.log")
    assert all(re.match(r"\S+ \S+ (WARNING|ERROR|CRITICAL) ", line) for line in errors.splitlines() if line[:2] == "20")
    start = main.split("Application startup complete", 1)[0]
    assert " WARNING " not in start, "a normal start-up logs no warning"
    records = [json.loads(line) for line in _log_text(logs, "mlx_router.jsonl").splitlines()]
    (ok_json,) = [r["request"] for r in records if r.get("request", {}).get("id") == "e2e-ok-1"]
    assert ok_json["outcome"] == "length" and ok_json["model"] == "tiny-a" and ok_json["status"] == 200
    assert ok_json["completion_tokens"] == 6 and ok_json["ttft_seconds"] > 0
    assert any(r["process"] == "mlx-router-engine" for r in records)
