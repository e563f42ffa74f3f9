"""Two ranks on 127.0.0.1 with MLX's ring backend, started by hand (MLX_RANK, MLX_HOSTFILE; `mlx.launch` busy-spins
a core): rank 0 serves HTTP, rank 1 follows. Through the official openai client the tensor-parallel models give
exactly the answers one process gives (the trained model's cases, streamed and not, all at once; a tool call;
a JSON schema under constrained decoding; greedy text of a random model), and so does a pipeline-parallel qwen2
(greedy and seeded sampling; llama has no pipeline in mlx-lm: a clear load error); a client that disconnects
frees its slot on both ranks; stopping rank 0 stops rank 1 cleanly; killing rank 1, or stopping it (a hang),
ends the running requests with a 503 and both ranks with status 4."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest

from tests.e2e.conftest import base_config
from tests.e2e.test_structured_output_e2e import SCHEMAS, json_schema_format
from tests.e2e.test_tools_e2e import ask, ask_stream, assert_case, case_request
from tests.fixtures.cases import cases_for
from tests.server_process import REPO, RouterServer, free_port

pytestmark = pytest.mark.e2e

GROUP_LOST_EXIT = 4  # mlx_router.config.ranks.GROUP_LOST_EXIT
RANDOM_PROMPTS = ["Tell me about the sea.", "Count to ten.", "What is a prime number?", "Write a haiku."]


class Group:
    """Rank 0 (a RouterServer) and rank 1 (the same command, MLX_RANK=1), over a ring on two free ports."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        hostfile = workdir / "hosts.json"
        hostfile.write_text(json.dumps([[f"127.0.0.1:{free_port()}"], [f"127.0.0.1:{free_port()}"]]))
        self.env = {"MLX_HOSTFILE": str(hostfile)}
        self.rank0 = RouterServer(workdir / "rank0", config, env={**self.env, "MLX_RANK": "0"})
        self.rank1_log = workdir / "rank1.log"
        self.rank1: subprocess.Popen[bytes] | None = None

    def start(self) -> Group:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", MLX_RANK="1", **self.env)
        env.pop("MLX_MODEL_DIR", None)
        with open(self.rank1_log, "wb") as log:
            self.rank1 = subprocess.Popen(
                [sys.executable, "-m", "mlx_router", "--config", str(self.rank0.config_path), "--no-demo"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self.rank0.start()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> int | None:
        """Stop rank 0, which stops the group; rank 1's exit status."""
        self.rank0.stop()
        if self.rank1 is not None and self.rank1.poll() is None:
            try:
                self.rank1.wait(20)
            except subprocess.TimeoutExpired:
                self.rank1.kill()
                self.rank1.wait(5)
        return self.rank1.returncode if self.rank1 is not None else None

    def logs(self) -> str:
        return f"--- rank 0\n{self.rank0.log()}\n--- rank 1\n{self.rank1_log.read_text(errors='replace')}"


def _config(models: Path, parallel: str = "tensor") -> dict[str, Any]:
    cfg = base_config(models, max_tokens=64, warmup_tokens=0)
    cfg["distributed"] = {"step_timeout_s": 10, "parallel": parallel}
    return cfg


@pytest.fixture(scope="module")
def models(models_root: Path, model_cache_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The models these tests use, and a random qwen2 (mlx-lm has pipeline parallelism for qwen2, not llama)."""
    from tests.fixtures.models import cached_random_llm

    root = tmp_path_factory.mktemp("dist-models")
    for name in ("tiny-a", "trained-qwen"):
        (root / name).symlink_to((models_root / name).resolve(), target_is_directory=True)
    qwen2 = cached_random_llm("qwen", arch="qwen2", seed=0, root=model_cache_root)
    (root / "tiny-qwen2").symlink_to(qwen2, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def group(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    g = Group(tmp_path_factory.mktemp("group"), _config(models)).start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def single(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterServer]:
    """The same models in one process: the answers the group must give."""
    with RouterServer(tmp_path_factory.mktemp("single"), _config(models)) as srv:
        yield srv


def _qwen2_answers(client: Any) -> list[Any]:
    out = []
    for prompt in RANDOM_PROMPTS:
        for sampling in ({"temperature": 0}, {"temperature": 1.0, "seed": 7}):
            req = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 30, **sampling}
            out.append(ask(client, "tiny-qwen2", **req))
    return out


def test_a_pipeline_group_answers_as_one_process_and_stops_cleanly(
    models: Path, single: RouterServer, tmp_path: Path
) -> None:
    # each rank runs whole layers: the same arithmetic as one process, so seeded sampling matches too
    g = Group(tmp_path, _config(models, parallel="pipeline")).start()
    try:
        assert _seen(_qwen2_answers(g.rank0.openai())) == _seen(_qwen2_answers(single.openai())), g.logs()
        with pytest.raises(openai.InternalServerError) as err:
            g.rank0.openai().chat.completions.create(model="trained-qwen", messages=[{"role": "user", "content": "hi"}])
        assert "no pipeline parallelism for llama" in err.value.message
    finally:
        status = g.stop()
    assert status == 0, g.logs()  # rank 0 stopped the group: rank 1 unloaded its shard and left cleanly
    assert "rank 1: the group stopped" in g.logs()


def _runs(client: Any) -> list[Any]:
    """Every request of the comparison at once: the trained cases (a tool call among them), streamed and not;
    greedy text of a random model; a JSON schema on it."""
    cases = cases_for("qwen")
    jobs: list[Any] = []
    for case in cases:
        jobs.append(lambda c=case: ask(client, "trained-qwen", **case_request(c)))
        jobs.append(lambda c=case: ask_stream(client, "trained-qwen", **case_request(c)))
    for prompt in RANDOM_PROMPTS:
        req = {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 40}
        jobs.append(lambda r=req: ask(client, "tiny-a", **r))
    schema = {"messages": [{"role": "user", "content": "Answer in JSON."}], "temperature": 0, "max_tokens": 300}
    jobs.append(lambda: ask_stream(client, "tiny-a", response_format=json_schema_format("person"), **schema))
    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(lambda job: job(), jobs))


def test_the_group_answers_as_one_process(group: Group, single: RouterServer) -> None:
    for server in (group.rank0, single):  # loaded first: the comparison runs requests, not loads, at once
        for model in ("trained-qwen", "tiny-a"):
            server.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    answers = _runs(group.rank0.openai())
    cases = cases_for("qwen")
    for i, case in enumerate(cases):
        assert_case(answers[2 * i], case)
        assert_case(answers[2 * i + 1], case)
    assert any(case.tool_calls for case in cases)
    jsonschema.validate(json.loads(answers[-1].content or ""), SCHEMAS["person"])
    assert _seen(answers) == _seen(_runs(single.openai())), group.logs()
    health = group.rank0.health()
    assert [r["rank"] for r in health["ranks"]] == [0, 1]
    assert all(r["budget_gb"] > 0 for r in health["ranks"])


def _seen(answers: list[Any]) -> list[tuple[Any, ...]]:
    """What a user reads of each answer (tool call ids are random)."""
    return [(a.content, a.reasoning, a.calls, a.finish_reason, a.raw_arguments) for a in answers]


def _ranks_busy(group: Group) -> list[tuple[int, int]]:
    return [(r["running"], r["queued"]) for r in group.rank0.health()["ranks"]]


def _wait_for(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_a_disconnect_frees_the_slot_on_every_rank(group: Group) -> None:
    client = group.rank0.openai()
    stream = client.chat.completions.create(
        model="tiny-a",
        messages=[{"role": "user", "content": "Go on forever."}],
        max_tokens=4000,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    next(iter(stream))
    assert _wait_for(lambda: _ranks_busy(group) == [(1, 0), (1, 0)]), group.rank0.health()
    stream.close()
    assert _wait_for(lambda: _ranks_busy(group) == [(0, 0), (0, 0)]), group.rank0.health()


def test_a_hot_swap_loads_and_unloads_on_every_rank(group: Group, single: RouterServer) -> None:
    # cache_size 2 and three models asked in turn: each load evicts the least recently used, on every rank
    req = {"messages": [{"role": "user", "content": RANDOM_PROMPTS[0]}], "temperature": 0, "max_tokens": 30}
    for model in ("tiny-a", "trained-qwen", "tiny-qwen2", "tiny-a", "trained-qwen"):
        assert _seen([ask(group.rank0.openai(), model, **req)]) == _seen([ask(single.openai(), model, **req)])
    assert _wait_for(lambda: [r["models_loaded"] for r in group.rank0.health()["ranks"]] == [2, 2])
    evicted = r"evicting (\S+) to make room for (\S+)"
    rank0, rank1 = (re.findall(evicted, log) for log in group.logs().split("--- rank 1"))
    assert len(rank0) >= 3 and rank0 == rank1, group.logs()  # the same models left, in the same order


def test_killing_rank_1_ends_requests_with_503_and_rank_0_exits(group: Group) -> None:
    # the last test of the module: it ends the group
    client = group.rank0.openai()
    stream = client.chat.completions.create(
        model="tiny-a",
        messages=[{"role": "user", "content": "Go on forever."}],
        max_tokens=4000,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = iter(stream)
    next(chunks)
    assert group.rank1 is not None and group.rank0.proc is not None
    os.kill(group.rank1.pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(openai.APIError) as err:
        for _ in chunks:
            pass
    assert "distributed group" in str(err.value.message), err.value
    assert time.monotonic() - t0 < 5
    try:
        client.chat.completions.create(model="tiny-a", messages=[{"role": "user", "content": "hi"}])
    except openai.InternalServerError as e:  # 503 while it shuts down
        assert e.status_code == 503
    except openai.APIConnectionError:  # or already gone
        pass
    else:
        pytest.fail("a request after the group broke up was answered")
    assert group.rank0.proc.wait(15) == GROUP_LOST_EXIT, group.logs()


def test_a_hung_rank_is_a_503_after_step_timeout(models: Path, tmp_path: Path) -> None:
    # rank 1 stopped (SIGSTOP) never answers: rank 0 waits inside a collective operation, where no error ever
    # comes; its watchdog ends the group after step_timeout_s
    cfg = _config(models)
    cfg["distributed"]["step_timeout_s"] = 2
    g = Group(tmp_path, cfg).start()
    try:
        client = g.rank0.openai()
        client.chat.completions.create(model="tiny-a", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert g.rank1 is not None and g.rank0.proc is not None
        os.kill(g.rank1.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="tiny-a", messages=[{"role": "user", "content": "hi"}])
        assert err.value.status_code == 503 and "distributed group" in err.value.message
        assert time.monotonic() - t0 < 6
        assert g.rank0.proc.wait(15) == GROUP_LOST_EXIT, g.logs()
        os.kill(g.rank1.pid, signal.SIGCONT)  # it finds rank 0 gone and leaves with the same status
        assert g.rank1.wait(15) == GROUP_LOST_EXIT, g.logs()
    finally:
        if g.rank1 is not None and g.rank1.poll() is None:
            os.kill(g.rank1.pid, signal.SIGCONT)
        g.stop()


def test_rank_0_alone_gives_up_after_join_timeout(models: Path, tmp_path: Path) -> None:
    # its peer never starts: MLX would wait for it for ever; the server fails its start-up instead
    cfg = _config(models)
    cfg["distributed"]["join_timeout_s"] = 2
    g = Group(tmp_path, cfg)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="server exited with 3"):
        g.rank0.start()
    assert time.monotonic() - t0 < 30
    assert "waiting up to 2s for every rank to join the group" in g.rank0.log()
