"""The app in process: error envelopes, validation, model states, memory given back on unload."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mlx_router.app import create_app
from mlx_router.engine.commands import ReadMemory
from tests.api.conftest import make_settings

CHAT = "/v1/chat/completions"


def body(**kw):
    b = {
        "model": "tiny-a",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "temperature": 0,
    }
    b.update(kw)
    return b


def assert_error(r, status, type_=None, code=None, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if type_:
        assert err["type"] == type_
    if code:
        assert err["code"] == code
    if param:
        assert err["param"] == param
    return err


@pytest.mark.parametrize(
    "change, param",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 3}, "n"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"stop": ["a"] * 17}, "stop"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"999999999": 1}}, "logit_bias"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_invalid_requests_are_400_with_param(app_client, change, param):
    err = assert_error(app_client.post(CHAT, json=body(**change)), 400, "invalid_request_error")
    assert err["param"] is not None and err["param"].startswith(param)


def test_unknown_model_404(app_client):
    assert_error(app_client.post(CHAT, json=body(model="ghost")), 404, code="model_not_found", param="model")
    assert_error(app_client.post(CHAT, json=body(model="../../etc")), 404, code="model_not_found")
    assert_error(app_client.get("/v1/models/ghost"), 404, code="model_not_found")


def test_malformed_and_wrong_shape(app_client):
    assert_error(app_client.post(CHAT, content=b"{", headers={"content-type": "application/json"}), 400)
    assert_error(app_client.post(CHAT, json=[1, 2]), 400)
    assert_error(app_client.get("/v1/nowhere"), 404)


def test_unknown_fields_ignored(app_client):
    r = app_client.post(CHAT, json=body(frobnicate=True, metadata={"a": 1}))
    assert r.status_code == 200, r.text


def test_context_length_is_checked(app_client):
    err = assert_error(app_client.post(CHAT, json=body(max_tokens=100000)), 400, code="context_length_exceeded")
    assert "max_tokens" in err["message"]


def test_model_states(app_client):
    cards = {m["id"]: m for m in app_client.get("/v1/models").json()["data"]}
    assert cards["tiny-b"]["state"] in ("stopped", "ready")
    assert app_client.post("/v1/models/tiny-b/load").json()["state"] == "ready"
    assert app_client.get("/v1/models/tiny-b").json()["loaded"] is True
    assert app_client.delete("/v1/models/tiny-b").json()["state"] == "stopped"


def test_unload_gives_memory_back(models_root):
    app = create_app(make_settings(models_root, prefix_cache_gb=0))
    with TestClient(app) as client:
        services = app.state.services

        def memory() -> dict[str, int]:
            async def ask() -> dict[str, int]:
                return await services.client.call(ReadMemory(clear_cache=True))

            return client.portal.call(ask)  # the engine's own figures (it runs in a process of its own)

        def active() -> int:
            return memory()["active"]

        base = active()
        assert client.post(CHAT, json=body()).status_code == 200
        loaded = active()
        assert loaded - base > 100_000  # the weights are resident
        assert client.delete("/v1/models/tiny-a").json()["state"] == "stopped"
        after = active()
        assert after - base < 0.1 * (loaded - base)
        assert memory()["cache"] == 0


def test_cache_size_evicts_least_recently_used(models_root):
    with TestClient(create_app(make_settings(models_root, cache_size=1))) as client:
        assert client.post(CHAT, json=body(model="tiny-a")).status_code == 200
        assert client.post(CHAT, json=body(model="tiny-b")).status_code == 200
        states = {m["id"]: m["state"] for m in client.get("/v1/models").json()["data"]}
        assert states["tiny-b"] == "ready" and states["tiny-a"] == "stopped"


def test_memory_budget_refuses_a_model_that_cannot_fit(models_root):
    with TestClient(create_app(make_settings(models_root, memory_budget_gb=0.000001))) as client:
        r = client.post(CHAT, json=body())
        assert_error(r, 503, code="insufficient_memory")
        assert int(r.headers["retry-after"]) >= 1


def test_critical_pressure_refuses_unless_the_model_has_a_cap(models_root):
    from mlx_router.config.settings import parse_settings

    # a threshold far above this machine's memory: the pressure level is critical
    d = {"model_directory": str(models_root), "scan_hf_cache": False, "memory_threshold_gb": 1e6}
    settings = parse_settings({"defaults": d, "models": {"tiny-b": {"memory_pressure_max_tokens": {"critical": 3}}}})
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/health").json()["memory"]["pressure"] == "critical"
        assert_error(client.post(CHAT, json=body(model="tiny-a")), 503, code="insufficient_memory")
        r = client.post(CHAT, json=body(model="tiny-b", max_tokens=50, ignore_eos=True))
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_images_are_refused_not_dropped(app_client):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    msgs = [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}]
    err = assert_error(app_client.post(CHAT, json=body(messages=msgs)), 400, param="messages.0.content")
    assert "tiny-a does not accept images" in err["message"]


def test_each_request_logs_where_its_time_to_first_token_went(app_client, caplog):
    import re

    with caplog.at_level("DEBUG", logger="mlx_router.serving.session"):  # debug: the end line is the one at info
        assert app_client.post(CHAT, json=body()).status_code == 200
    lines = [r.getMessage() for r in caplog.records if "first token" in r.getMessage()]
    assert len(lines) == 1
    m = re.search(
        r"prepared in (\d+) ms, model ready (\d+) ms later, first token (\d+) ms after that \((\d+) ms", lines[0]
    )
    assert m is not None, lines[0]
    prepared, ready, first, total = (int(x) for x in m.groups())
    assert abs(prepared + ready + first - total) <= 2  # each part rounded to a millisecond
