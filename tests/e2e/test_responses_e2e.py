"""`POST /v1/responses` through a real server and the official `openai` client's Responses API (and the Agents
SDK, whose default model speaks it): text, streams (event order and sequence numbers, on the raw SSE too; item
ids equal to the final Response's), function calls and their outputs sent back, a custom tool's call with its raw
input, reasoning items, max_output_tokens, structured output, hosted tools skipped, previous_response_id, errors,
and a recorded Codex turn replayed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.fixtures.cases import REASONING, SYSTEM, TOOLS, WEATHER_ANSWER, WEATHER_RESULT
from tests.server_process import RouterServer
from tests.unit.test_lark_regex import APPLY_PATCH

CODEX_TURN = Path(__file__).parents[1] / "fixtures" / "requests" / "codex_turn.json"
# Responses' flat function tools, the same definitions the trained models learnt (same keys, same order)
FUNCTIONS = [{"type": "function", **t["function"]} for t in TOOLS]
CAPITAL = "The capital of France is Paris."
# An apply_patch-like grammar whose every text is short, so a random model forced into it always finishes
DELETE_PATCH = r"""start: "*** Begin Patch" LF "*** Delete File: " NAME ".txt" LF "*** End Patch" LF
NAME: /[a-z]{1,6}/
%import common.LF
"""
ITEM_EVENTS = ("response.output_item.added", "response.output_item.done")


def sse_events(server: RouterServer, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The raw stream: (event name, data) of each SSE event."""
    with httpx.stream("POST", server.base_url + "/v1/responses", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = []
    for block in text.split("\n\n"):
        if not block.strip() or block.startswith(":"):
            continue
        name, data = re.fullmatch(r"event: (\S+)\ndata: (.*)", block, re.S).groups()  # type: ignore[union-attr]
        events.append((name, json.loads(data)))
    return events


def patch_so_far(text: str) -> bool:
    """Whether `text` is the raw start of a patch (never JSON): what a call cut by the output limit holds."""
    return text.startswith("*** Begin Patch\n") or "*** Begin Patch\n".startswith(text)


def check_stream(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """What Codex checks of a stream; returns the final Response."""
    assert [data["type"] for _, data in events] == [name for name, _ in events]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    names = [name for name, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] in ("response.completed", "response.incomplete")
    final = events[-1][1]["response"]
    done = [data["item"] for name, data in events if name == "response.output_item.done"]
    assert done == final["output"]  # same items, same ids, same texts
    added = [data["item"]["id"] for name, data in events if name == "response.output_item.added"]
    assert added == [item["id"] for item in final["output"]]
    for name, data in events:  # every delta belongs to the item open at that moment
        if name.endswith(".delta"):
            assert data["item_id"] == final["output"][data["output_index"]]["id"]
    return final


def test_text_answer(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="trained-qwen", temperature=0, instructions=SYSTEM, input="What is the capital of France?"
    )
    assert r.status == "completed" and r.output_text == CAPITAL
    assert r.id.startswith("resp_") and r.output[0].type == "message"
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_streamed_text_events_in_order(client: openai.OpenAI, server: RouterServer) -> None:
    body = {
        "model": "trained-qwen",
        "temperature": 0,
        "instructions": SYSTEM,
        "input": "What is the capital of France?",
    }
    events = list(client.responses.create(stream=True, **body))
    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == CAPITAL
    assert events[-1].response.output_text == CAPITAL
    final = check_stream(sse_events(server, {**body, "stream": True}))
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == CAPITAL


def test_function_call_and_its_output_sent_back(client: openai.OpenAI) -> None:
    question = {"role": "user", "content": "What is the weather in Paris?"}
    r = client.responses.create(model="trained-qwen", temperature=0, input=[question], tools=FUNCTIONS)
    (call,) = r.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"location": "Paris"} and call.call_id.startswith("call_")
    assert r.status == "completed" and r.output_text == ""
    follow = [question, call.model_dump(exclude_none=True)]
    follow.append({"type": "function_call_output", "call_id": call.call_id, "output": WEATHER_RESULT})
    answer = client.responses.create(model="trained-qwen", temperature=0, input=follow, tools=FUNCTIONS)
    assert answer.output_text == WEATHER_ANSWER


def test_streamed_function_call(server: RouterServer) -> None:
    body = {
        "model": "trained-qwen",
        "temperature": 0,
        "input": "What is the weather in Paris?",
        "tools": [{"type": "web_search"}, *FUNCTIONS, {"type": "file_search", "vector_store_ids": ["vs_1"]}],
        "stream": True,
    }
    events = sse_events(server, body)
    final = check_stream(events)
    (call,) = final["output"]
    assert call["type"] == "function_call" and json.loads(call["arguments"]) == {"location": "Paris"}
    names = [n for n, _ in events]
    assert names.index("response.function_call_arguments.delta") < names.index("response.function_call_arguments.done")
    args = "".join(d["delta"] for n, d in events if n == "response.function_call_arguments.delta")
    assert args == call["arguments"]


def test_previous_response_id_continues_a_stored_response(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="trained-qwen", temperature=0, input="What is the weather in Paris?", tools=FUNCTIONS
    )
    (call,) = first.output
    assert call.type == "function_call"
    output = {"type": "function_call_output", "call_id": call.call_id, "output": WEATHER_RESULT}
    second = client.responses.create(
        model="trained-qwen", temperature=0, previous_response_id=first.id, input=[output], tools=FUNCTIONS
    )
    assert second.output_text == WEATHER_ANSWER and second.previous_response_id == first.id
    unstored = client.responses.create(
        model="trained-qwen", temperature=0, input="What is the weather in Paris?", store=False
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="trained-qwen", temperature=0, previous_response_id=unstored.id, input="more")
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_reasoning_items(client: openai.OpenAI, server: RouterServer) -> None:
    r = client.responses.create(model="trained-qwen", temperature=0, input="Think step by step: what is 2+2?")
    reasoning, message = r.output
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == REASONING and reasoning.summary == []
    assert message.type == "message" and r.output_text == "The answer is 4."
    assert r.usage is not None and 0 < r.usage.output_tokens_details.reasoning_tokens < r.usage.output_tokens
    events = sse_events(
        server, {"model": "trained-qwen", "temperature": 0, "input": "Think step by step: what is 2+2?", "stream": True}
    )
    final = check_stream(events)
    names = [n for n, _ in events]
    last_thought = max(i for i, n in enumerate(names) if n == "response.reasoning_text.delta")
    assert last_thought < names.index("response.output_text.delta")
    thought = "".join(d["delta"] for n, d in events if n == "response.reasoning_text.delta")
    assert thought == final["output"][0]["content"][0]["text"] == REASONING
    # sent back, the reasoning item is accepted as the assistant turn's thinking
    again = client.responses.create(
        model="trained-qwen",
        temperature=0,
        input=[
            {"role": "user", "content": "Think step by step: what is 2+2?"},
            *[item.model_dump(exclude_none=True) for item in r.output],
            {"role": "user", "content": "What is the capital of France?"},
        ],
    )
    assert again.status == "completed"


def test_max_output_tokens_makes_it_incomplete(client: openai.OpenAI, server: RouterServer) -> None:
    body = {
        "model": "trained-qwen",
        "temperature": 0,
        "instructions": SYSTEM,
        "input": "What is the capital of France?",
    }
    r = client.responses.create(max_output_tokens=3, **body)
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text and CAPITAL.startswith(r.output_text) and r.output_text != CAPITAL
    final = check_stream(sse_events(server, {**body, "max_output_tokens": 3, "stream": True}))
    assert final["status"] == "incomplete" and final["output"][0]["status"] == "incomplete"


class Verdict(BaseModel):
    answer: Literal["yes", "no"]
    sure: bool


def test_text_format_json_schema_parses(client: openai.OpenAI) -> None:
    r = client.responses.parse(
        model="tiny-a",
        input="Is the sky blue?",
        text_format=Verdict,
        max_output_tokens=200,
        reasoning={"effort": "none"},
        temperature=0,
    )
    assert r.status == "completed" and isinstance(r.output_parsed, Verdict)


def test_custom_tool_call_comes_back_with_its_raw_input(client: openai.OpenAI, server: RouterServer) -> None:
    tool = {
        "type": "custom",
        "name": "apply_patch",
        "description": "Edit files with a patch.",
        "format": {"type": "grammar", "syntax": "lark", "definition": DELETE_PATCH},
    }
    # no thinking first (the random model would spend its budget on it): straight to the forced call
    body = {
        "model": "tiny-a",
        "input": "Delete a file.",
        "tools": [tool],
        "max_output_tokens": 200,
        "reasoning": {"effort": "none"},
        "parallel_tool_calls": False,
        "temperature": 0,
    }
    r = client.responses.create(tool_choice={"type": "custom", "name": "apply_patch"}, **body)
    (call,) = r.output
    assert call.type == "custom_tool_call" and call.name == "apply_patch"
    assert re.fullmatch(r"\*\*\* Begin Patch\n\*\*\* Delete File: [a-z]{1,6}\.txt\n\*\*\* End Patch\n", call.input)
    events = sse_events(server, {**body, "tool_choice": {"type": "custom", "name": "apply_patch"}, "stream": True})
    final = check_stream(events)
    (streamed,) = final["output"]
    assert streamed["type"] == "custom_tool_call" and streamed["input"].startswith("*** Begin Patch\n")
    names = [n for n, _ in events]
    assert "response.custom_tool_call_input.delta" in names and "response.function_call_arguments.delta" not in names
    done = next(d for n, d in events if n == "response.custom_tool_call_input.done")
    assert done["input"] == streamed["input"]


def test_a_cut_apply_patch_call_is_still_raw_text(client: openai.OpenAI) -> None:
    apply_patch = {
        "type": "custom",
        "name": "apply_patch",
        "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH},
    }
    r = client.responses.create(
        model="tiny-a",
        input="Add a file.",
        tools=[apply_patch],
        tool_choice={"type": "custom", "name": "apply_patch"},
        max_output_tokens=120,
        reasoning={"effort": "none"},
        temperature=0,
    )
    (call,) = r.output
    assert call.type == "custom_tool_call" and patch_so_far(call.input)


def test_errors_in_openai_envelope(client: openai.OpenAI, server: RouterServer) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(
            model="trained-qwen", input="hi", tools=FUNCTIONS, tool_choice={"type": "function", "name": "nope"}
        )
    assert info.value.body["param"] == "tool_choice"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        recursive = {"type": "grammar", "syntax": "lark", "definition": 'start: "(" start ")" | "x"'}
        client.responses.create(
            model="trained-qwen",
            input="hi",
            tools=[{"type": "custom", "name": "nest", "format": recursive}],
            tool_choice={"type": "custom", "name": "nest"},
        )
    assert "refers to itself" in info.value.message
    r = httpx.post(server.base_url + "/v1/responses", json={"model": "trained-qwen"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"


def test_codex_turn_replayed(server: RouterServer) -> None:
    body = {k: v for k, v in json.loads(CODEX_TURN.read_text()).items() if not k.startswith("_")}
    for model in ("trained-qwen", "tiny-a"):
        events = sse_events(server, {**body, "model": model})
        final = check_stream(events)
        assert final["store"] is False and final["parallel_tool_calls"] is False
        for item in final["output"]:
            assert item["type"] in ("message", "reasoning", "function_call", "custom_tool_call")
            if item["type"] == "function_call":
                assert item["name"] != "apply_patch"  # the freeform tool never comes back as a function call
    # the same turn with the patch forced (and no thinking first), cut by its limit: still raw patch text
    forced = {
        **body,
        "model": "tiny-a",
        "tool_choice": {"type": "custom", "name": "apply_patch"},
        "reasoning": {"effort": "none"},
        "max_output_tokens": 120,
        "temperature": 0,
    }
    final = check_stream(sse_events(server, forced))
    (call,) = final["output"]
    assert call["type"] == "custom_tool_call" and patch_so_far(call["input"])


def test_agents_sdk_default_model(server: RouterServer) -> None:
    agents = pytest.importorskip("agents")
    client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="not-needed")
    agents.set_tracing_disabled(True)
    agent = agents.Agent(
        name="Assistant",
        instructions=SYSTEM,
        model="trained-qwen",
        model_settings=agents.ModelSettings(temperature=0),
    )
    config = agents.RunConfig(model_provider=agents.OpenAIProvider(openai_client=client, use_responses=True))
    result = agents.Runner.run_sync(agent, "What is the capital of France?", run_config=config)
    assert result.final_output == CAPITAL


def test_output_text_logprobs_when_included(client: openai.OpenAI, server: RouterServer) -> None:
    body = {
        "model": "trained-qwen",
        "temperature": 0,
        "instructions": SYSTEM,
        "input": "What is the capital of France?",
    }
    plain = client.responses.create(**body)
    assert plain.output[0].content[0].logprobs == []  # only when asked
    r = client.responses.create(include=["message.output_text.logprobs"], top_logprobs=2, **body)
    text = r.output[0].content[0]
    assert text.text == CAPITAL and text.logprobs
    assert "".join(lp.token for lp in text.logprobs).startswith(CAPITAL)
    assert all(len(lp.top_logprobs) == 2 and lp.logprob <= 0 for lp in text.logprobs)
    events = sse_events(server, {**body, "stream": True, "include": ["message.output_text.logprobs"]})
    final = check_stream(events)
    streamed = [lp for n, d in events if n == "response.output_text.delta" for lp in d["logprobs"]]
    assert streamed == final["output"][0]["content"][0]["logprobs"] and streamed


def test_codex_next_turn_reads_the_last_from_the_prefix_cache(server: RouterServer) -> None:
    """Codex resends the whole history each turn (store false): the next turn's prompt starts with the last one,
    so the prefix cache serves it."""
    body = {k: v for k, v in json.loads(CODEX_TURN.read_text()).items() if not k.startswith("_")}
    body.update(model="trained-qwen", max_output_tokens=16)
    first = check_stream(sse_events(server, body))
    replies = first["output"]  # sent back whole, reasoning included, as Codex does
    outputs = [
        {"type": f"{item['type']}_output", "call_id": item["call_id"], "output": "done"}
        for item in replies
        if item["type"] in ("function_call", "custom_tool_call")
    ]
    follow = {**body, "input": [*body["input"], *replies, *outputs, {"role": "user", "content": "Thanks."}]}
    second = check_stream(sse_events(server, follow))
    cached = second["usage"]["input_tokens_details"]["cached_tokens"]
    assert cached >= 0.9 * first["usage"]["input_tokens"]
