"""Reasoning through a real server and the official openai client: thinking goes to `reasoning_content`, is
streamed as it is written and before the answer, never reaches `content`; templates that can switch thinking
off get the switch from the request (`chat_template_kwargs`) or from the model's config entry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import base_config
from tests.e2e.test_tools_e2e import MARKUP, ask, assert_case, case_request, stream_answer
from tests.fixtures.cases import REASONING, ChatCase, case_by_name, cases_for
from tests.server_process import RouterServer

THINKING = [
    (flavour, case) for flavour in ("qwen", "deepseek_v3", "harmony") for case in cases_for(flavour) if case.reasoning
]


def delta_kinds(chunks: list[Any]) -> list[str]:
    """The kind of each non-empty delta, in order: "reasoning", "content" or "call"."""
    kinds = []
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if getattr(delta, "reasoning_content", None):
            kinds.append("reasoning")
        if delta.content:
            kinds.append("content")
        if delta.tool_calls:
            kinds.append("call")
    return kinds


@pytest.mark.parametrize(("flavour", "case"), THINKING, ids=[f"{f}-{c.name}" for f, c in THINKING])
def test_thinking_streams_first_and_apart(client: Any, flavour: str, case: ChatCase) -> None:
    model = f"trained-{flavour}"
    chunks = list(client.chat.completions.create(model=model, stream=True, **case_request(case)))
    assert_case(stream_answer(chunks), case)
    kinds = delta_kinds(chunks)
    assert kinds.count("reasoning") >= 2, "thinking streams as it is written, not in one piece"
    first_answer = min(i for i, k in enumerate(kinds) if k != "reasoning")
    assert "reasoning" not in kinds[first_answer:], kinds
    whole = ask(client, model, **case_request(case))
    assert_case(whole, case)
    assert case.reasoning not in (whole.content or "")


def test_enable_thinking_false_reaches_the_template(client: Any) -> None:
    case = case_by_name("qwen", "no_thinking")
    off = client.chat.completions.create(model="trained-qwen", **case_request(case))
    default = client.chat.completions.create(model="trained-qwen", **case_request(case, extra_body=None))
    assert off.choices[0].message.content == case.content
    assert getattr(off.choices[0].message, "reasoning_content", None) is None
    # the switch renders an empty thinking block into the prompt
    assert off.usage.prompt_tokens > default.usage.prompt_tokens


@pytest.mark.parametrize("flavour", ["qwen", "deepseek_v3", "harmony"])
def test_thinking_cut_by_max_tokens(client: Any, flavour: str) -> None:
    case = case_by_name(flavour, "reasoning")
    for answer in (
        ask(client, f"trained-{flavour}", **case_request(case, max_tokens=8)),
        stream_answer(
            client.chat.completions.create(model=f"trained-{flavour}", stream=True, **case_request(case, max_tokens=8))
        ),
    ):
        assert answer.finish_reason == "length"
        assert answer.reasoning and REASONING.startswith(answer.reasoning), answer
        assert not answer.content, answer
        assert not any(m in answer.reasoning for m in MARKUP)


def test_reasoning_response_disable_in_config(models_root: Path, tmp_path: Path, client: Any) -> None:
    config = base_config(models_root)
    config["models"] = {"trained-qwen": {"reasoning_response": "disable"}}
    no_thinking, thinking = case_by_name("qwen", "no_thinking"), case_by_name("qwen", "reasoning")
    reference = client.chat.completions.create(model="trained-qwen", **case_request(no_thinking))
    with RouterServer(tmp_path / "srv", config) as srv:
        disabled = srv.openai()
        # no kwarg in the request: the config renders enable_thinking=False, so the prompt is the switched one
        r = disabled.chat.completions.create(model="trained-qwen", **case_request(no_thinking, extra_body=None))
        assert r.usage.prompt_tokens == reference.usage.prompt_tokens
        assert r.choices[0].message.content == no_thinking.content
        # a request that asks for thinking still gets it
        on = {"chat_template_kwargs": {"enable_thinking": True}}
        assert_case(ask(disabled, "trained-qwen", **case_request(thinking, extra_body=on)), thinking)
