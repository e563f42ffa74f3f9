"""Memory and hot swaps seen from outside (issue 20, items 8-12): unloading gives memory back to the system,
eviction never takes a model from under its admitted requests, KV admission counts idle models as evictable,
a model that cannot load evicts nothing, and refusals known before a stream starts come as HTTP statuses."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import base_config
from tests.server_process import RouterServer

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "Tell me a story about a robot."}]
MB = 1024**2


@pytest.fixture(scope="module")
def wide_llm_dir(model_cache_root: Path) -> Path:
    """A random llama of ~200 MB (hidden 1024, 8 layers, float16): big enough that what an unload leaves
    behind stands out from the engine's own ~90 MB."""
    from tests.fixtures import cache, models

    tok = models.cached_tokenizer("qwen", model_cache_root)
    params = {"flavour": "qwen", "hidden": 1024, "layers": 8, "dtype": "float16", "tokenizer": cache.dir_digest(tok)}
    return cache.cached_build(
        "wide",
        params,
        lambda tmp: models.build_random_llm(tmp, tok, dtype="float16", hidden=1024, layers=8),
        model_cache_root,
    )


def link_models(root: Path, targets: dict[str, Path]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, target in targets.items():
        os.symlink(target, root / name, target_is_directory=True)
    return root


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def test_unloading_gives_the_memory_back_to_the_system(wide_llm_dir, random_llm_dir, tmp_path):
    """Item 8: load, serve and unload a 200 MB model three times, with a small model serving between; after
    each unload the engine's RSS is back near where it started. Without `malloc_trim` glibc kept ~185 MB of
    the freed heap from the second cycle on (the small model's buffers sit above the freed ones)."""
    root = link_models(tmp_path / "models", {"wide": wide_llm_dir, "tiny-a": random_llm_dir})
    weights = sum(p.stat().st_size for p in wide_llm_dir.glob("*.safetensors")) / MB
    with RouterServer(tmp_path / "srv", base_config(root)) as srv:
        client = srv.openai()
        pid = srv.health()["engine_pid"]
        base = rss_mb(pid)
        held = []
        for _ in range(3):
            assert httpx.post(srv.base_url + "/v1/models/wide/load", timeout=120).status_code == 200
            loaded = rss_mb(pid)
            client.chat.completions.create(model="wide", messages=HI, max_tokens=4)
            assert httpx.delete(srv.base_url + "/v1/models/wide", timeout=60).status_code == 200
            client.chat.completions.create(model="tiny-a", messages=HI, max_tokens=8)
            held.append(rss_mb(pid) - base)
            assert loaded - base > 0.8 * weights  # the model was really there
        print(f"engine RSS {base:.0f} MB at start; held after each unload: {[round(h) for h in held]} MB")
        assert max(held) < 0.35 * weights, (held, weights)


KB = 1024


@pytest.fixture(scope="module")
def third_llm_dir(model_cache_root: Path) -> Path:
    from tests.fixtures import models

    return models.cached_random_llm("qwen", seed=2, root=model_cache_root)


@pytest.fixture()
def three_models(tmp_path, random_llm_dir, random_llm_dir_b, third_llm_dir) -> Path:
    return link_models(
        tmp_path / "models", {"tiny-a": random_llm_dir, "tiny-b": random_llm_dir_b, "tiny-c": third_llm_dir}
    )


def chat(model: str, max_tokens: int = 8, stream: bool = False, **extra: object) -> dict:
    return {"model": model, "messages": HI, "max_tokens": max_tokens, "stream": stream, "temperature": 0, **extra}


def post(srv: RouterServer, body: dict) -> tuple[int, dict[str, str], object]:
    """(status, headers, what came back): a stream's events (parsed JSON; "[DONE]" as is), else the JSON body."""
    import json

    with httpx.stream("POST", srv.base_url + "/v1/chat/completions", json=body, timeout=60) as r:
        if not body.get("stream") or r.status_code != 200:
            r.read()
            return r.status_code, dict(r.headers), r.json()
        events: list[object] = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
        return r.status_code, dict(r.headers), events


def stream_error(events: object) -> dict | None:
    """The error event of a stream that started with 200, if any."""
    for ev in events if isinstance(events, list) else []:
        if isinstance(ev, dict) and "error" in ev:
            return ev["error"]
    return None


def models_of(srv: RouterServer) -> dict[str, dict]:
    return {m["id"]: m for m in srv.health()["models"]}


def test_a_burst_for_two_models_never_evicts_one_under_its_admitted_requests(three_models, tmp_path):
    """Item 9: with cache_size 1, one request to A, then 16 concurrent requests alternating C and A (half of
    them streams), sent 30 ms apart so that C's load is on its way while A's requests arrive. Every request is
    either served whole or refused before its response starts with a 503 that names cache_size; none is cut by
    its model's eviction (before: A's requests got 503 model_unloaded, streams as 200 and an error event)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    with RouterServer(tmp_path / "srv", base_config(three_models, cache_size=1)) as srv:
        assert post(srv, chat("tiny-a"))[0] == 200
        bodies = [chat("tiny-c" if i % 2 == 0 else "tiny-a", stream=i % 4 >= 2) for i in range(16)]
        with ThreadPoolExecutor(16) as pool:
            sent = []
            for body in bodies:
                sent.append((body, pool.submit(post, srv, body)))
                time.sleep(0.03)
            outcomes = [(body, fut.result()) for body, fut in sent]
        cut = [
            (body["model"], body["stream"], status, got)
            for body, (status, _, got) in outcomes
            if (status == 200 and stream_error(got) is not None)
            or (status != 200 and got["error"]["code"] == "model_unloaded")
        ]
        assert not cut  # admitted, then dropped with their model
        served = 0
        for body, (status, headers, got) in outcomes:
            if status == 200:
                assert not body["stream"] or got[-1] == "[DONE]"
                served += 1
                continue
            assert (status, got["error"]["code"]) == (503, "insufficient_memory"), (body, status, got)
            assert "cache_size" in got["error"]["message"], got
            assert int(headers["retry-after"]) >= 1
        assert served >= 1
        assert srv.health()["requests_in_flight"] == 0


def test_a_model_serving_a_request_is_not_evicted_for_another(three_models, tmp_path):
    """Items 9 and 12: while A streams, requests for C get 503 naming cache_size as their HTTP status (a
    stream too, not 200 and an error event); A's stream runs to its end; once A is idle, C loads."""
    import threading

    with RouterServer(tmp_path / "srv", base_config(three_models, cache_size=1)) as srv:
        long_stream: dict = {}
        first_token = threading.Event()

        def run_long() -> None:
            import json

            body = chat("tiny-a", max_tokens=1500, stream=True, ignore_eos=True)
            with httpx.stream("POST", srv.base_url + "/v1/chat/completions", json=body, timeout=120) as r:
                long_stream["status"] = r.status_code
                events = []
                for line in r.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        events.append(json.loads(line[6:]))
                        if any(c.get("delta", {}).get("content") for c in events[-1].get("choices", [])):
                            first_token.set()
                    elif line == "data: [DONE]":
                        events.append("[DONE]")
                long_stream["events"] = events
            first_token.set()

        runner = threading.Thread(target=run_long)
        runner.start()
        assert first_token.wait(60)
        for stream in (True, False):
            status, headers, got = post(srv, chat("tiny-c", stream=stream))
            assert status == 503, got
            assert got["error"]["code"] == "insufficient_memory"
            assert "cache_size is 1" in got["error"]["message"] and "tiny-a" in got["error"]["message"]
            assert int(headers["retry-after"]) >= 1
        assert models_of(srv)["tiny-a"]["state"] == "ready"
        runner.join(120)
        events = long_stream["events"]
        assert long_stream["status"] == 200 and stream_error(events) is None and events[-1] == "[DONE]"
        finish = [c["finish_reason"] for ev in events if isinstance(ev, dict) for c in ev["choices"]]
        assert finish[-1] == "length"
        assert post(srv, chat("tiny-c"))[0] == 200  # A is idle now: it is evicted for C
        assert models_of(srv)["tiny-a"]["state"] == "stopped"


def gb(n_bytes: float) -> float:
    """`required_memory_gb` that makes a model cost `n_bytes` with the default safety_margin of 1.2."""
    return n_bytes / 1.2 / 1024**3


def test_kv_admission_evicts_idle_models_it_needs_the_room_of(three_models, tmp_path):
    """Item 10: budget 1000 KB, cache_size 2, an idle 850 KB model loaded. A request for a 600 KB model whose
    KV cache reserves ~170 KB fits alone; it is served, the idle model evicted (before: 503 on every retry,
    forever, since admission counted the idle model as taken). Then the same with the model loaded: two
    models of 500 and 400 KB are loaded, and a request that needs KV room past the budget evicts the idle one."""
    models = {"tiny-b": {"required_memory_gb": gb(850 * KB)}, "tiny-a": {"required_memory_gb": gb(600 * KB)}}
    cfg = base_config(three_models, memory_budget_gb=1000 * KB / 1024**3, cache_size=2)
    cfg["models"] = models
    with RouterServer(tmp_path / "srv", cfg) as srv:
        assert post(srv, chat("tiny-b", max_tokens=2))[0] == 200
        for stream in (True, False):  # a second time: once loaded, it stays served
            status, _, got = post(srv, chat("tiny-a", max_tokens=300, stream=stream))
            assert status == 200 and stream_error(got) is None, got
        states = {m: s["state"] for m, s in models_of(srv).items()}
        assert states == {"tiny-a": "ready", "tiny-b": "stopped"}

    cfg["models"] = {"tiny-a": {"required_memory_gb": gb(500 * KB)}, "tiny-b": {"required_memory_gb": gb(400 * KB)}}
    with RouterServer(tmp_path / "srv2", cfg) as srv:
        assert post(srv, chat("tiny-a", max_tokens=2))[0] == 200
        assert post(srv, chat("tiny-b", max_tokens=2))[0] == 200
        assert {m["state"] for m in models_of(srv).values()} == {"ready"}
        status, _, got = post(srv, chat("tiny-a", max_tokens=300, stream=True))
        assert status == 200 and stream_error(got) is None, got
        states = {m: s["state"] for m, s in models_of(srv).items()}
        assert states == {"tiny-a": "ready", "tiny-b": "stopped"}


def broken_copies(root: Path, source: Path) -> list[str]:
    """Copies of `source` that cannot load, each in its own way."""
    import json
    import shutil

    def copy(name: str) -> Path:
        shutil.copytree(source.resolve(), root / name)
        return root / name

    (copy("garbage") / "model.safetensors").write_bytes(b"this is not a safetensors file")
    weights = copy("truncated") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted download
    config = copy("misshapen") / "config.json"
    config.write_text(json.dumps(dict(json.loads(config.read_text()), intermediate_size=256)))
    return ["garbage", "truncated", "misshapen"]


def test_a_model_that_cannot_load_evicts_nothing(tmp_path, random_llm_dir):
    """Items 11 and 12: with cache_size 1 and a good model loaded and idle, requests for model folders whose
    weights are garbage, cut short or of the wrong shapes fail with 500 model_load_failed, as their
    HTTP status for streams too; the good model stays loaded and is never loaded again (before: each such
    request evicted it first)."""
    root = link_models(tmp_path / "models", {"tiny-a": random_llm_dir})
    broken = broken_copies(root, random_llm_dir)
    with RouterServer(tmp_path / "srv", base_config(root, cache_size=1)) as srv:
        assert post(srv, chat("tiny-a"))[0] == 200
        for name in broken:
            for stream in (True, False):
                status, _, got = post(srv, chat(name, stream=stream))
                assert status == 500, (name, stream, got)
                assert got["error"]["code"] == "model_load_failed" and name in got["error"]["message"], got
                good = models_of(srv)["tiny-a"]
                assert (good["state"], good["loads"]) == ("ready", 1), (name, good)
            failed = models_of(srv)[name]
            assert failed["state"] == "failed" and failed["error"], failed  # health says why
        assert post(srv, chat("tiny-a"))[0] == 200


def test_a_model_larger_than_the_budget_is_refused_before_the_stream_starts(three_models, tmp_path):
    """Item 12: a model that can never fit, and a request whose KV cache alone is past the budget, get 503 with
    Retry-After as their HTTP status, streams too, and the message names memory_budget_gb (before: 200 and an
    error event that blamed the models in use)."""
    cfg = base_config(three_models, memory_budget_gb=1000 * KB / 1024**3)
    cfg["models"] = {"tiny-c": {"required_memory_gb": gb(2000 * KB)}, "tiny-a": {"required_memory_gb": gb(600 * KB)}}
    with RouterServer(tmp_path / "srv", cfg) as srv:
        for model, max_tokens in (("tiny-c", 8), ("tiny-a", 3000)):
            for stream in (True, False):
                status, headers, got = post(srv, chat(model, max_tokens=max_tokens, stream=stream))
                assert status == 503, (model, stream, got)
                assert got["error"]["code"] == "insufficient_memory"
                assert "memory_budget_gb" in got["error"]["message"], got
                assert int(headers["retry-after"]) >= 1
        assert post(srv, chat("tiny-a", stream=True))[0] == 200


def test_memory_pressure_unloads_the_idle_models(three_models, tmp_path):
    """At critical pressure (a threshold far above this machine's memory) a request unloads every idle model
    but its own, and models without a `critical` cap are refused with 503."""
    cfg = base_config(three_models, memory_threshold_gb=1e6, cache_size=3)
    cfg["models"] = {m: {"memory_pressure_max_tokens": {"critical": 4}} for m in ("tiny-a", "tiny-b")}
    with RouterServer(tmp_path / "srv", cfg) as srv:
        assert srv.health()["memory"]["pressure"] == "critical"
        assert post(srv, chat("tiny-a"))[0] == 200
        status, _, got = post(srv, chat("tiny-b", stream=True))
        assert status == 200 and stream_error(got) is None
        states = {m: s["state"] for m, s in models_of(srv).items()}
        assert states == {"tiny-a": "stopped", "tiny-b": "ready"}
        status, headers, got = post(srv, chat("tiny-c", stream=True))
        assert status == 503 and "critical" in got["error"]["message"] and int(headers["retry-after"]) >= 1
