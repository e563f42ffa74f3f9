"""The warm-up drives the runner through the paths requests take: solo, padded batches, newcomers joining a
running batch, a prefix-cache hit; and leaves nothing behind."""

from __future__ import annotations

import pytest
from mlx_lm import load

from mlx_router.core.runner import ModelRunner, RunnerConfig
from mlx_router.core.warmup import warm_up, warmup_plan
from mlx_router.engine.params import GenerationRequest, SamplingParams


@pytest.fixture(scope="module")
def model(random_llm_dir):
    return load(str(random_llm_dir))


class Spy:
    """Records, for each request the warm-up adds, its prompt, whether it was cached, and what was running."""

    def __init__(self, runner: ModelRunner) -> None:
        self.adds: list[tuple[int, int, tuple[int, int]]] = []
        add = runner.add

        def spy_add(req, emit):
            before = runner.counts()
            add(req, emit)
            self.adds.append((len(req.prompt_tokens), req.max_tokens, before))

        runner.add = spy_add  # type: ignore[method-assign]


def test_warm_up_goes_through_each_path_and_leaves_nothing_behind(model, caplog):
    m, tok = model
    runner = ModelRunner("m", m, tok, RunnerConfig(prefill_step_size=32, prefill_batch_tokens=64))
    spy = Spy(runner)
    seed = tok.encode("Hello, who are you? Tell me about the weather.")
    with caplog.at_level("INFO", logger="mlx_router.core.runner"):
        stages = warm_up(runner, seed, 3, [1, 2, 8], long_prompt=40)
    assert [name for name, _ in stages] == ["solo", "batch 2", "batch 8", "prefix hit"]
    assert all(seconds > 0 for _, seconds in stages)
    assert not runner.has_work()
    assert caplog.text.count("prompt tokens") == 0  # the warm-up's requests are not logged as users' are

    solo, *batches, turn1, turn2 = spy.adds
    assert solo[0] == 40  # longer than one prefill chunk
    batch8 = batches[2:]
    assert len(batch8) == 8
    # Prompts of different lengths within a batch (padding), and the second half joined while the first ran.
    assert len({n for n, _, _ in batch8}) > 1
    assert all(running == 0 for _, _, (running, _) in batch8[:4])
    assert all(running >= 1 for _, _, (running, _) in batch8[4:])
    # The follow-up turn starts with the first turn's prompt and answer.
    assert turn2[0] > turn1[0]

    assert runner.prefix_bytes() > 0
    runner.forget_history()
    assert runner.prefix_bytes() == 0
    assert runner.stats.steps == 0


@pytest.mark.parametrize("size", [8, 16])
def test_each_batch_stage_decodes_all_its_rows_together(model, size):
    """A batch of B rows can take a path of its own (one matrix from some size on), compiled on first use: the
    stage must run B rows at once even when its newcomers are prefilled in several groups."""
    m, tok = model
    runner = ModelRunner("m", m, tok, RunnerConfig(prefill_step_size=32, prefill_batch_tokens=64))
    running: list[int] = []
    step = runner.step

    def spy_step():
        step()
        running.append(runner.counts()[0])

    runner.step = spy_step  # type: ignore[method-assign]
    stages = warm_up(runner, tok.encode("Hello, who are you? Tell me about the weather."), 3, [size], 40)
    assert [name for name, _ in stages] == ["solo", f"batch {size}", "prefix hit"]
    assert max(running) == size
    assert not runner.has_work()


def test_the_follow_up_turn_hits_the_prefix_cache(model):
    m, tok = model
    runner = ModelRunner("m", m, tok, RunnerConfig(prefill_step_size=32, prefix_min_tokens=8))
    cached: list[int] = []
    add = runner.add

    def spy_add(req, emit):
        def seen(event):
            if event.prompt_tokens:
                cached.append(event.cached_tokens)
            emit(event)

        add(req, seen)

    runner.add = spy_add  # type: ignore[method-assign]
    warm_up(runner, tok.encode("Hello there, general weather."), 2, [], long_prompt=40)
    assert cached[-1] > 0  # the last request (the follow-up turn) started from a cached prefix
    assert cached[0] == 0


def test_the_plan_runs_only_on_cuda_unless_configured():
    import mlx.core as mx

    on_cuda = mx.cuda.is_available()
    assert warmup_plan(None, None, 32) == ((3, [1, 2, 4, 8, 16, 32]) if on_cuda else (0, [1, 2, 4, 8, 16, 32]))
    assert warmup_plan(2, None, 24) == (2, [1, 2, 4, 8, 16, 24])
    assert warmup_plan(0, [8], 32) == (0, [8])
    assert warmup_plan(4, [1, 8, 64], 32) == (4, [1, 8])  # no batch bigger than the server will run


def test_a_server_with_the_warm_up_on_serves_from_a_clean_prefix_cache(models_root, caplog):
    from fastapi.testclient import TestClient

    from mlx_router.app import create_app
    from tests.api.conftest import make_settings

    # the engine on a thread of this process, so that its log reaches caplog
    settings = make_settings(
        models_root, warmup_tokens=2, warmup_batch_sizes=[2, 4], model="tiny-a", engine_process=False
    )
    app = create_app(settings)
    with caplog.at_level("INFO", logger="mlx_router.core.pool"), TestClient(app) as client:
        body = {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        health = client.get("/v1/health").json()
    assert "warmed tiny-a up" in caplog.text and "batch 4" in caplog.text
    (model,) = [m for m in health["models"] if m["id"] == "tiny-a"]
    assert model["running"] == 0 and model["queued"] == 0


def test_a_failed_warm_up_leaves_the_model_serving(models_root, caplog, monkeypatch):
    from fastapi.testclient import TestClient

    from mlx_router.app import create_app
    from mlx_router.core import pool
    from tests.api.conftest import make_settings

    def broken(runner, *args, **kwargs):
        runner.add(GenerationRequest("w", "tiny-a", [1, 2, 3], 4, SamplingParams(), internal=True), lambda event: None)
        raise MemoryError("out of memory during the warm-up")

    monkeypatch.setattr(pool, "warm_up", broken)  # the engine runs on a thread of this process: patchable
    settings = make_settings(models_root, warmup_tokens=2, warmup_batch_sizes=[2], model="tiny-a", engine_process=False)
    app = create_app(settings)
    with caplog.at_level("WARNING", logger="mlx_router.core.pool"), TestClient(app) as client:
        body = {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        health = client.get("/v1/health").json()
    assert "warm-up of tiny-a failed" in caplog.text
    (model,) = [m for m in health["models"] if m["id"] == "tiny-a"]
    assert model["running"] == 0 and model["queued"] == 0  # the warm-up's request was dropped
