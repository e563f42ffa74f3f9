"""Tool calls through a real server and the official openai client, for every model format.

Every case a trained model reproduces (``tests.fixtures.cases``) is sent non-streamed and streamed: the answer
must be the case's content, reasoning and calls, and the stream must announce each call by name before its
arguments and never leak markup. Then: an agent loop that sends the results back, tool_choice (none,
required, a named function, parallel_tool_calls) enforced by constrained decoding on random models, config
switches that turn tools off, and outputs with broken calls that must still be answered with a 200.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageToolCallParam,
    ChatCompletionToolMessageParam,
)

from tests.e2e.conftest import base_config
from tests.fixtures.cases import TIME_RESULT, TOOLS, WEATHER_RESULT, ChatCase, case_by_name, cases_for
from tests.fixtures.tokenizers import FLAVOURS
from tests.server_process import RouterServer

# Markup of every format (tool calls, reasoning, turn ends): none of it may reach a content or reasoning delta
MARKUP = (
    "<tool_call>",
    "</tool_call>",
    "<function=",
    "<parameter=",
    "[TOOL_CALLS]",
    "[ARGS]",
    "<|python_tag|>",
    "<|channel|>",
    "<|message|>",
    "<|constrain|>",
    "<|call|>",
    "<|start|>",
    "<|end|>",
    "<|return|>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁sep｜>",
    "<｜tool▁call▁end｜>",
    "<think>",
    "</think>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<｜end▁of▁sentence｜>",
    "</s>",
)
CASES = [(flavour, case) for flavour in FLAVOURS for case in cases_for(flavour)]
TOOL_NAMES = {t["function"]["name"] for t in TOOLS}


def case_request(case: ChatCase, **kw: Any) -> dict[str, Any]:
    """Keyword arguments of `chat.completions.create` that replay `case` greedily."""
    req: dict[str, Any] = {"messages": case.messages, "temperature": 0, "max_tokens": 200}
    if case.tools:
        req["tools"] = case.tools
    if case.kwargs:
        req["extra_body"] = {"chat_template_kwargs": case.kwargs}
    req.update(kw)
    return req


@dataclass
class Answer:
    """What a client makes of one response: the parts a user reads, streamed or not."""

    content: str | None
    reasoning: str | None
    calls: list[tuple[str, dict[str, Any]]]
    finish_reason: str | None
    ids: list[str] = field(default_factory=list)
    raw_arguments: list[str] = field(default_factory=list)


def decode_calls(names: list[str], raw: list[str], finish: str | None) -> list[tuple[str, dict[str, Any]]]:
    """(name, decoded arguments) of each call. Arguments are a JSON object, except that an output cut by
    max_tokens may end inside its last call (its arguments are then what was written: kept as the string)."""
    calls: list[tuple[str, Any]] = []
    for i, (name, text) in enumerate(zip(names, raw, strict=True)):
        assert isinstance(text, str)
        try:
            args = json.loads(text)
        except ValueError:
            assert finish == "length" and i == len(raw) - 1, f"arguments are not JSON: {text!r}"
            args = text
        else:
            assert isinstance(args, dict), text
        calls.append((name, args))
    return calls


def answer_of(response: Any) -> Answer:
    """The Answer of a non-streamed response, checking the shape of its calls."""
    choice = response.choices[0]
    message = choice.message
    assert message.role == "assistant"
    tool_calls = message.tool_calls or []
    for tc in tool_calls:
        assert tc.type == "function" and isinstance(tc.id, str) and tc.id
    ids = [tc.id for tc in tool_calls]
    assert len(set(ids)) == len(ids), ids
    raw = [tc.function.arguments for tc in tool_calls]
    calls = decode_calls([tc.function.name for tc in tool_calls], raw, choice.finish_reason)
    if calls:
        assert message.content != "", "a call-only turn has content null, never an empty string"
    return Answer(message.content, getattr(message, "reasoning_content", None), calls, choice.finish_reason, ids, raw)


def stream_answer(stream: Iterable[Any]) -> Answer:
    """The Answer of a stream, checking every delta on the way (markup, call announcement order)."""
    content, reasoning = [], []
    calls: dict[int, dict[str, Any]] = {}
    finishes = []
    for pos, chunk in enumerate(stream):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if pos == 0:
            assert choice.delta.role == "assistant"
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
        delta = choice.delta
        for text, sink in ((delta.content, content), (getattr(delta, "reasoning_content", None), reasoning)):
            if text:
                assert not any(m in text for m in MARKUP), f"markup in a delta: {text!r}"
                sink.append(text)
        for tc in delta.tool_calls or []:
            _add_call_delta(calls, tc, pos)
    assert len(finishes) == 1, finishes
    assert sorted(calls) == list(range(len(calls))), "call indexes count from 0"
    ordered = [calls[i] for i in sorted(calls)]
    for call in ordered[:-1] if finishes[0] == "length" else ordered:  # a cut call may have no arguments yet
        _check_call_stream(call)
    ids = [c["id"] for c in ordered]
    assert len(set(ids)) == len(ids)
    raw = [c["args"] for c in ordered]
    decoded = decode_calls([c["name"] for c in ordered], raw, finishes[0])
    return Answer("".join(content) or None, "".join(reasoning) or None, decoded, finishes[0], ids, raw)


def _add_call_delta(calls: dict[int, dict[str, Any]], tc: Any, pos: int) -> None:
    if tc.index not in calls:  # the first delta of a call announces it: id, type and name
        assert tc.id and tc.type == "function" and tc.function.name, tc
        calls[tc.index] = {"id": tc.id, "name": tc.function.name, "name_at": pos, "args": "", "frags": []}
        fragment = tc.function.arguments or ""
    else:
        assert tc.id is None and not tc.function.name, f"a later delta repeats the call's head: {tc}"
        fragment = tc.function.arguments or ""
    if fragment:
        calls[tc.index]["args"] += fragment
        calls[tc.index]["frags"].append(pos)


def _check_call_stream(call: dict[str, Any]) -> None:
    """The name went out before any argument text, and real arguments came in more than one piece."""
    assert call["frags"], f"no arguments streamed for {call['name']}"
    assert call["name_at"] < call["frags"][0], "the name must be sent as soon as it is known"
    if len(call["args"]) > 2:
        assert len(call["frags"]) >= 2, f"arguments in one blob: {call['args']!r}"


def ask(client: Any, model: str, **req: Any) -> Answer:
    return answer_of(client.chat.completions.create(model=model, **req))


def ask_stream(client: Any, model: str, **req: Any) -> Answer:
    return stream_answer(client.chat.completions.create(model=model, stream=True, **req))


def assert_case(answer: Answer, case: ChatCase) -> None:
    """The answer is exactly what the case says a correct server returns."""
    assert answer.calls == list(case.tool_calls)
    assert answer.content == case.content
    assert answer.reasoning == case.reasoning
    assert answer.finish_reason == ("tool_calls" if case.tool_calls else "stop")


@pytest.mark.parametrize(("flavour", "case"), CASES, ids=[f"{f}-{c.name}" for f, c in CASES])
def test_every_case_streamed_and_not(client: Any, flavour: str, case: ChatCase) -> None:
    model = f"trained-{flavour}"
    whole = ask(client, model, **case_request(case))
    assert_case(whole, case)
    streamed = ask_stream(client, model, **case_request(case))
    assert_case(streamed, case)
    assert streamed.raw_arguments == whole.raw_arguments  # the fragments add up to the same JSON text


@pytest.mark.parametrize("flavour", [f for f in FLAVOURS if f != "mistral"])
def test_agent_loop_sends_results_back(client: Any, flavour: str) -> None:
    # Mistral's template writes the call ids into the prompt: its model only knows the ids of its cases.
    start = case_by_name(flavour, "parallel_calls")
    messages: list[Any] = list(start.messages)
    results = {"get_weather": WEATHER_RESULT, "get_time": TIME_RESULT}
    for _turn in range(3):
        r = client.chat.completions.create(
            model=f"trained-{flavour}", messages=messages, tools=TOOLS, temperature=0, max_tokens=200
        )
        message = r.choices[0].message
        if not message.tool_calls:
            break
        assert r.choices[0].finish_reason == "tool_calls" and message.content is None
        calls = [
            ChatCompletionMessageToolCallParam(
                id=tc.id,
                type="function",
                function={"name": tc.function.name, "arguments": tc.function.arguments},
            )
            for tc in message.tool_calls
        ]
        messages.append(ChatCompletionAssistantMessageParam(role="assistant", content=None, tool_calls=calls))
        messages += [
            ChatCompletionToolMessageParam(role="tool", tool_call_id=tc.id, content=results[tc.function.name])
            for tc in message.tool_calls
        ]
    final = case_by_name(flavour, "parallel_results")
    assert message.content == final.content
    assert r.choices[0].finish_reason == "stop"


def test_tool_choice_none_offers_and_parses_nothing(client: Any) -> None:
    case = case_by_name("qwen", "tool_call")
    for model, kw in (("trained-qwen", {}), ("tiny-a", {"max_tokens": 24})):
        bare = client.chat.completions.create(model=model, **case_request(case, tools=None, **kw))
        none = client.chat.completions.create(model=model, **case_request(case, tool_choice="none", **kw))
        # the prompt is the one without tools, and whatever the model writes comes back as text
        assert none.usage.prompt_tokens == bare.usage.prompt_tokens
        assert none.choices[0].message.tool_calls is None
        assert none.choices[0].message.content == bare.choices[0].message.content
        assert none.choices[0].finish_reason == bare.choices[0].finish_reason != "tool_calls"
        streamed = ask_stream(client, model, **case_request(case, tool_choice="none", **kw))
        assert streamed.calls == [] and streamed.content == bare.choices[0].message.content


def test_forced_choice_on_a_trained_model(client: Any) -> None:
    case = case_by_name("qwen", "tool_call")
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", named):
        assert_case(ask(client, "trained-qwen", **case_request(case, tool_choice=choice)), case)
    # asked about the weather but forced to get_time: the call is get_time, with valid arguments
    other = {"type": "function", "function": {"name": "get_time"}}
    for answer in (
        ask(client, "trained-qwen", **case_request(case, tool_choice=other)),
        ask_stream(client, "trained-qwen", **case_request(case, tool_choice=other)),
    ):
        assert [name for name, _ in answer.calls] == ["get_time"]
        jsonschema.validate(answer.calls[0][1], TOOLS[1]["function"]["parameters"])
        assert answer.finish_reason == "tool_calls" and answer.content is None


def test_parallel_tool_calls_false_gives_one_call(client: Any) -> None:
    case = case_by_name("qwen", "parallel_calls")
    for answer in (
        ask(client, "trained-qwen", **case_request(case, parallel_tool_calls=False)),
        ask_stream(client, "trained-qwen", **case_request(case, parallel_tool_calls=False)),
    ):
        assert answer.calls == [case.tool_calls[0]]
        assert answer.finish_reason == "tool_calls"


# Random models write anything the grammar allows: bounded schemas keep every answer within max_tokens.
BOUNDED_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {
                "type": "object",
                "additionalProperties": False,
                "required": ["location", "unit"],
                "properties": {
                    "location": {"type": "string", "maxLength": 12},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "schedule",
            "description": "Plan a meeting",
            "parameters": {
                "type": "object",
                "additionalProperties": False,
                "required": ["day", "people", "options"],
                "properties": {
                    "day": {"type": "integer", "minimum": 1, "maximum": 31},
                    "people": {
                        "type": "array",
                        "maxItems": 3,
                        "items": {"type": "string", "enum": ["ann", "bob"]},
                    },
                    "options": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["online"],
                        "properties": {"online": {"type": "boolean"}},
                    },
                },
            },
        },
    },
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in BOUNDED_TOOLS}
SAMPLINGS = [(0.0, None), (1.0, 11), (1.0, 12)]


def _forced(client: Any, run: tuple[str, float, int | None, bool], **kw: Any) -> Answer:
    model, temperature, seed, stream = run
    req = dict(
        messages=[{"role": "user", "content": "Please help me."}],
        tools=BOUNDED_TOOLS,
        temperature=temperature,
        seed=seed,
        **kw,
    )
    return ask_stream(client, model, **req) if stream else ask(client, model, **req)


def _forced_runs(client: Any, choices: list[dict[str, Any]]) -> list[tuple[Any, Answer]]:
    """Each request option with both random models, greedy and two seeds, streamed and not: all at once,
    so rows of one batch decode under different grammars."""
    runs = [
        (kw, (model, t, seed, stream))
        for kw in choices
        for model in ("tiny-a", "tiny-b")
        for t, seed in SAMPLINGS
        for stream in (False, True)
    ]
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(zip(runs, pool.map(lambda r: _forced(client, r[1], **r[0]), runs), strict=True))


def test_forced_single_call_is_always_valid(client: Any) -> None:
    choices = [{"tool_choice": "required"}] + [
        {"tool_choice": {"type": "function", "function": {"name": name}}} for name in SCHEMAS
    ]
    for (kw, run), answer in _forced_runs(
        client, [dict(c, parallel_tool_calls=False, max_tokens=400) for c in choices]
    ):
        assert answer.finish_reason == "tool_calls", (run, answer)
        assert answer.content is None, (run, answer)
        assert len(answer.calls) == 1, (run, answer.calls)
        name, args = answer.calls[0]
        if kw["tool_choice"] == "required":
            assert name in SCHEMAS
        else:
            assert name == kw["tool_choice"]["function"]["name"]
        jsonschema.validate(args, SCHEMAS[name])


def test_forced_parallel_calls_are_valid_until_cut(client: Any) -> None:
    # a random model never ends a list of calls by itself (its end token is never likely): it writes calls
    # until max_tokens, and the call it was writing then comes back unfinished, with finish_reason "length".
    # (No thinking here: a random model always thinks, as long as the budget lets it: half of max_tokens.)
    no_thinking = {"chat_template_kwargs": {"enable_thinking": False}}
    options = {"tool_choice": "required", "max_tokens": 300, "extra_body": no_thinking}
    for (_, run), answer in _forced_runs(client, [options]):
        assert answer.content is None, (run, answer)
        assert answer.finish_reason in ("tool_calls", "length"), run
        complete = answer.raw_arguments if answer.finish_reason == "tool_calls" else answer.raw_arguments[:-1]
        assert complete, (run, answer)
        for name, args in answer.calls[: len(complete)]:
            jsonschema.validate(args, SCHEMAS[name])


def test_bad_tool_choice_is_a_400(client: Any) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    bad = [
        dict(tool_choice="required"),  # no tools
        dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}),
        dict(
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {
                            "type": "object",
                            "properties": {"x": {"type": "array", "uniqueItems": True}},
                        },
                    },
                }
            ],
            tool_choice="required",
        ),
    ]
    for kw in bad:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="tiny-a", messages=msgs, max_tokens=4, **kw)
        assert e.value.body["param"] in ("tool_choice", "tools"), e.value.body


def check_cut(client: Any, model: str, case: ChatCase, max_tokens: int) -> None:
    """An output cut by max_tokens inside a call: a 200 saying "length", no markup in the content, the calls
    so far (the last one unfinished) the same streamed or not."""
    whole = ask(client, model, **case_request(case, max_tokens=max_tokens))
    streamed = ask_stream(client, model, **case_request(case, max_tokens=max_tokens))
    for answer in (whole, streamed):
        assert answer.finish_reason == "length"
        assert not any(m in (answer.content or "") for m in MARKUP), answer.content
        assert [n for n, _ in answer.calls] == [n for n, _ in case.tool_calls][: len(answer.calls)]
    assert whole.raw_arguments == streamed.raw_arguments
    assert (whole.content or "") == (streamed.content or "")


def test_a_call_cut_by_max_tokens_is_still_a_200(client: Any) -> None:
    for max_tokens in (3, 12, 40):
        check_cut(client, "trained-qwen", case_by_name("qwen", "parallel_calls"), max_tokens)
    check_cut(client, "trained-mistral", case_by_name("mistral", "parallel_calls"), 10)
    check_cut(client, "trained-deepseek_v3", case_by_name("deepseek_v3", "reasoning_tool_call"), 30)


def _models_dir(models_root: Path, tmp: Path, aliases: dict[str, str]) -> Path:
    """A models dir with `alias -> served model` links (a second id for one model, with its own settings)."""
    root = tmp / "models"
    root.mkdir()
    for alias, target in aliases.items():
        (root / alias).symlink_to((models_root / target).resolve(), target_is_directory=True)
    return root


def _tools_ignored(client: Any, model: str) -> None:
    """Tools in the request change nothing: same prompt, the model's text as content, no calls."""
    case = case_by_name("qwen", "tool_call")
    bare = client.chat.completions.create(model=model, **case_request(case, tools=None))
    offered = client.chat.completions.create(model=model, **case_request(case))
    assert offered.usage.prompt_tokens == bare.usage.prompt_tokens
    assert offered.choices[0].message.tool_calls is None
    assert offered.choices[0].message.content == bare.choices[0].message.content
    assert ask_stream(client, model, **case_request(case)).calls == []
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, **case_request(case, tool_choice="required"))
    assert e.value.body["param"] == "tool_choice"


def test_function_calling_disabled(models_root: Path, tmp_path: Path) -> None:
    root = _models_dir(models_root, tmp_path, {"trained-qwen": "trained-qwen"})
    with RouterServer(tmp_path / "srv", base_config(root, enable_function_calling=False)) as srv:
        _tools_ignored(srv.openai(), "trained-qwen")


def test_unconstrained_calls_and_a_model_without_tools(models_root: Path, tmp_path: Path) -> None:
    root = _models_dir(
        models_root,
        tmp_path,
        {"tiny-a": "tiny-a", "trained-qwen": "trained-qwen", "qwen-no-tools": "trained-qwen"},
    )
    config = base_config(root, constrain_tool_calls=False)
    config["models"] = {"qwen-no-tools": {"supports_tools": False}}
    with RouterServer(tmp_path / "srv", config) as srv:
        client = srv.openai()
        _tools_ignored(client, "qwen-no-tools")
        for name in ("tool_call", "parallel_calls", "reasoning_tool_call"):  # the parser alone finds them
            case = case_by_name("qwen", name)
            assert_case(ask(client, "trained-qwen", **case_request(case)), case)
            assert_case(ask_stream(client, "trained-qwen", **case_request(case)), case)
        # a random model under tool_choice auto writes garbage: always a 200 with its text
        for seed in (1, 2, 3):
            kw = dict(
                messages=[{"role": "user", "content": "hi"}],
                tools=TOOLS,
                temperature=1.0,
                seed=seed,
                max_tokens=48,
            )
            assert ask(client, "tiny-a", **kw).finish_reason == "length"
            assert ask_stream(client, "tiny-a", **kw).finish_reason == "length"
        for max_tokens in (5, 14):  # unconstrained calls cut mid-way
            check_cut(client, "trained-qwen", case_by_name("qwen", "tool_call"), max_tokens)
