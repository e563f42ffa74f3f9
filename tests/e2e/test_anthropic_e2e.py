"""Anthropic Messages through a real server and the official `anthropic` SDK (pinned in the test extra), with the
trained tiny models: text, streams (the raw SSE's event order too), tool use and results, thinking, stop reasons,
max_tokens capped to the context, count_tokens, errors as the SDK's exception classes, both key headers, model
aliases, and a recorded Claude Code turn replayed twice: its billing line must not cost the prefix cache."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from transformers import AutoTokenizer

from tests.e2e.conftest import base_config
from tests.fixtures.cases import REASONING, SYSTEM, TOOLS, WEATHER_ANSWER, WEATHER_RESULT
from tests.server_process import REPO, RouterServer

KEY = "sk-anthropic-test"
GREEDY = {"temperature": 0}  # the SDK has no temperature argument any more: clients that want greedy send it
MODEL = "trained-qwen"
CAPITAL = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
WEATHER_Q = "What is the weather in Paris?"
# the trained cases' tools in Anthropic's shape (same keys, same order: the template prints them with tojson)
ANTHROPIC_TOOLS = [
    {
        "name": t["function"]["name"],
        "description": t["function"]["description"],
        "input_schema": t["function"]["parameters"],
    }
    for t in TOOLS
]
RECORDED = REPO / "tests" / "fixtures" / "data" / "claude_code_request.json"
SMALL_CONTEXT = 160  # tiny-a's context here: a prompt fills it fast


@pytest.fixture(scope="module")
def server(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterServer]:
    config = base_config(models_root)
    config["defaults"]["model_aliases"] = {"claude-haiku-4-5": MODEL, "claude-sonnet-*": MODEL}
    config["server"] = {"api_keys": [KEY]}
    config["models"] = {"tiny-a": {"max_context_tokens": SMALL_CONTEXT}}
    with RouterServer(tmp_path_factory.mktemp("anthropic"), config) as srv:
        yield srv


def server_model_dir(server: RouterServer) -> Path:
    return Path(json.loads(server.config_path.read_text())["defaults"]["model_directory"]) / MODEL


@pytest.fixture(scope="module")
def client(server: RouterServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=60)


def ask(client: anthropic.Anthropic, content: Any = CAPITAL, **kw: Any) -> Any:
    req: dict[str, Any] = {"model": MODEL, "max_tokens": 200, "extra_body": GREEDY}
    req.update(kw)
    return client.messages.create(messages=[{"role": "user", "content": content}], **req)


def sse(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """A raw stream's events as (event line, data)."""
    out = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def assert_anthropic_order(names: list[str]) -> None:
    """message_start, then blocks (start, deltas, stop), message_delta, message_stop; pings anywhere between."""
    names = [n for n in names if n != "ping"]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"], names
    open_block = False
    for name in names[1:-2]:
        if name == "content_block_start":
            assert not open_block, names
            open_block = True
        elif name in ("content_block_delta", "content_block_stop"):
            assert open_block, names
            open_block = name == "content_block_delta"
        else:
            raise AssertionError(f"unexpected {name} in {names}")
    assert not open_block, names


def test_text_whole_and_streamed(client: anthropic.Anthropic) -> None:
    msg = ask(client, system=SYSTEM)
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == ANSWER
    assert msg.stop_reason == "end_turn" and msg.role == "assistant" and msg.model == MODEL
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) > 10 and msg.usage.output_tokens > 5
    with client.messages.stream(
        model=MODEL, max_tokens=200, extra_body=GREEDY, system=SYSTEM, messages=[{"role": "user", "content": CAPITAL}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    # (how many pieces is not asserted: tokens the server could not send at once go out together)
    assert "".join(pieces) == ANSWER
    assert final.content[0].text == ANSWER and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == msg.usage.output_tokens


def test_raw_stream_event_order_and_named_events(server: RouterServer) -> None:
    body = {"model": MODEL, "max_tokens": 200, "temperature": 0, "stream": True, "system": SYSTEM}
    body["messages"] = [{"role": "user", "content": CAPITAL}]
    r = httpx.post(f"{server.base_url}/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "data: [DONE]" not in r.text
    events = sse(r)
    assert all(data["type"] == name for name, data in events)
    assert_anthropic_order([name for name, _ in events])
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == ANSWER
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_and_the_result_round_trip(client: anthropic.Anthropic, stream: bool) -> None:
    req: dict[str, Any] = {"model": MODEL, "max_tokens": 200, "extra_body": GREEDY, "tools": ANTHROPIC_TOOLS}
    question = [{"role": "user", "content": WEATHER_Q}]
    if stream:
        with client.messages.stream(messages=question, **req) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(messages=question, **req)
    calls = [b for b in msg.content if b.type == "tool_use"]
    assert [(c.name, c.input) for c in calls] == [("get_weather", {"location": "Paris"})]
    assert msg.stop_reason == "tool_use"
    # the trained chat's call id is call_1: the client sends back what it got, under that id
    call = {"type": "tool_use", "id": "call_1", "name": calls[0].name, "input": calls[0].input}
    result = {"type": "tool_result", "tool_use_id": "call_1", "content": WEATHER_RESULT}
    follow = [*question, {"role": "assistant", "content": [call]}, {"role": "user", "content": [result]}]
    answer = client.messages.create(messages=follow, **req)
    assert answer.content[0].text == WEATHER_ANSWER and answer.stop_reason == "end_turn"


def test_parallel_calls_and_disable_parallel_tool_use(client: anthropic.Anthropic) -> None:
    both = "What is the weather in Paris and the time in Tokyo?"
    msg = ask(client, both, tools=ANTHROPIC_TOOLS)
    assert [b.name for b in msg.content if b.type == "tool_use"] == ["get_weather", "get_time"]
    one = ask(client, both, tools=ANTHROPIC_TOOLS, tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert [b.name for b in one.content if b.type == "tool_use"] == ["get_weather"]
    forced = ask(client, CAPITAL, tools=ANTHROPIC_TOOLS, tool_choice={"type": "tool", "name": "get_time"})
    assert [b.name for b in forced.content if b.type == "tool_use"] == ["get_time"]
    assert forced.stop_reason == "tool_use"


def test_thinking_blocks_whole_and_streamed(client: anthropic.Anthropic) -> None:
    question = "Think step by step: what is 2+2?"
    msg = ask(client, question)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking.strip() == REASONING and msg.content[0].signature
    assert msg.content[1].text.strip() == "The answer is 4."
    kinds = []
    with client.messages.stream(
        model=MODEL, max_tokens=200, extra_body=GREEDY, messages=[{"role": "user", "content": question}]
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                kinds.append(event.delta.type)
        final = stream.get_final_message()
    assert "thinking_delta" in kinds and "signature_delta" in kinds
    assert kinds.index("text_delta") > max(i for i, k in enumerate(kinds) if k == "thinking_delta")
    assert final.content[0].thinking == msg.content[0].thinking
    # sent back with the next turn, a thinking block is accepted (and goes to the template as reasoning)
    again = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
        {"role": "user", "content": CAPITAL},
    ]
    assert client.messages.create(model=MODEL, max_tokens=20, messages=again).content


def test_a_thinking_budget_cuts_the_thinking_and_the_answer_follows(
    client: anthropic.Anthropic, server: RouterServer
) -> None:
    """`budget_tokens` holds the thinking block to that many tokens (a grammar forces the close tag); the
    answer is still written after it."""
    question = "Think step by step: what is 2+2?"
    whole = ask(client, question, thinking={"type": "enabled", "budget_tokens": 1024})
    assert whole.content[0].thinking.strip() == REASONING  # a budget it stays within changes nothing
    budget = 3
    cut = ask(client, question, thinking={"type": "enabled", "budget_tokens": budget})
    assert [b.type for b in cut.content] == ["thinking", "text"], cut.content
    thought = cut.content[0].thinking
    assert thought.strip() and REASONING.startswith(thought.strip()) and thought.strip() != REASONING
    tok = AutoTokenizer.from_pretrained(str(server_model_dir(server)))
    assert len(tok.encode(thought, add_special_tokens=False)) <= budget + 1  # + the newline the template adds
    assert cut.content[1].text.strip() and cut.stop_reason == "end_turn"


def test_thinking_disabled_reaches_the_template(client: anthropic.Anthropic) -> None:
    off = ask(client, thinking={"type": "disabled"})
    assert [b.type for b in off.content] == ["text"] and off.content[0].text == ANSWER
    on = ask(client, thinking={"type": "enabled", "budget_tokens": 1024})
    assert off.usage.input_tokens + (off.usage.cache_read_input_tokens or 0) > on.usage.input_tokens + (
        on.usage.cache_read_input_tokens or 0
    ), "the switch renders an empty thinking block into the prompt"


def test_stop_reasons_and_max_tokens_capped(client: anthropic.Anthropic) -> None:
    cut = ask(client, system=SYSTEM, max_tokens=3)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    stopped = ask(client, system=SYSTEM, stop_sequences=["Paris"])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "Paris"
    assert stopped.content[0].text == "The capital of France is "
    # Claude Code asks for 32000 whatever the model: capped to the context's room, never refused
    big = ask(client, system=SYSTEM, max_tokens=32000)
    assert big.content[0].text == ANSWER and big.stop_reason == "end_turn"


def test_a_full_context_ends_with_model_context_window_exceeded(client: anthropic.Anthropic) -> None:
    req = {"model": "tiny-a", "messages": [{"role": "user", "content": "hello " * 40}]}
    prompt = client.messages.count_tokens(**req).input_tokens
    assert prompt < SMALL_CONTEXT
    msg = client.messages.create(max_tokens=32000, extra_body=GREEDY, **req)
    # greedy, the random model does not end by itself here: it runs until the context is full
    assert msg.stop_reason == "model_context_window_exceeded"
    assert msg.usage.output_tokens == SMALL_CONTEXT - prompt
    # a conversation past the context is counted (the client counts to learn that), and only sending it is refused
    long = {"model": "tiny-a", "messages": [{"role": "user", "content": "hello " * 400}]}
    assert client.messages.count_tokens(**long).input_tokens > SMALL_CONTEXT
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(max_tokens=10, **long)


def test_structured_output_matches_the_schema(client: anthropic.Anthropic) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "rank": {"type": "integer"}},
        "required": ["city", "rank"],
        "additionalProperties": False,
    }
    msg = ask(client, max_tokens=60, output_config={"format": {"type": "json_schema", "schema": schema}})
    data = json.loads(next(b.text for b in msg.content if b.type == "text"))  # after any thinking
    assert set(data) == {"city", "rank"} and isinstance(data["rank"], int) and len(data["city"]) <= 12


def test_count_tokens_matches_the_prompt_the_model_sees(client: anthropic.Anthropic) -> None:
    req: dict[str, Any] = {"model": MODEL, "system": SYSTEM, "messages": [{"role": "user", "content": CAPITAL}]}
    counted = client.messages.count_tokens(**req).input_tokens
    msg = client.messages.create(max_tokens=5, extra_body=GREEDY, **req)
    assert counted == msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0)
    with_tools = client.beta.messages.count_tokens(tools=ANTHROPIC_TOOLS, betas=["token-counting-2024-11-01"], **req)
    assert with_tools.input_tokens > counted  # the tools are in the prompt too


def test_errors_in_anthropics_shape_as_the_sdks_exceptions(server: RouterServer, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        ask(client, model="no-such-model")
    assert nf.value.body["type"] == "error" and nf.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=MODEL, max_tokens=10, messages=[])
    assert (
        bad.value.body["error"]["type"] == "invalid_request_error" and "messages" in bad.value.body["error"]["message"]
    )
    with pytest.raises(anthropic.BadRequestError):
        ask(client, tools=ANTHROPIC_TOOLS, tool_choice={"type": "tool", "name": "not_a_tool"})
    wrong = anthropic.Anthropic(base_url=server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as auth:
        ask(wrong)
    assert auth.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": auth.value.body["error"]["message"]},
    }
    r = httpx.post(f"{server.base_url}/v1/messages", content=b"{not json", headers={"x-api-key": KEY})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_a_failure_mid_stream_is_an_error_event(server: RouterServer, client: anthropic.Anthropic) -> None:
    """The model unloaded by an operator while it streams: an `error` event (the SDK raises it) ends the stream."""
    question = [{"role": "user", "content": "hello " * 8}]
    with client.messages.stream(model="tiny-b", max_tokens=32000, messages=question, extra_body=GREEDY) as stream:
        events = iter(stream)
        assert next(e for e in events if e.type == "content_block_delta")
        r = httpx.delete(f"{server.base_url}/v1/models/tiny-b", headers={"x-api-key": KEY}, timeout=30)
        assert r.status_code == 200
        with pytest.raises(anthropic.APIStatusError) as failed:
            for _ in events:
                pass
    body = failed.value.body
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error" and body["error"]["message"]


def test_bearer_key_and_aliases(server: RouterServer) -> None:
    bearer = anthropic.Anthropic(base_url=server.base_url, auth_token=KEY, max_retries=0)  # Authorization: Bearer
    for name in ("claude-haiku-4-5", "claude-sonnet-4-5-20250929"):
        msg = ask(bearer, system=SYSTEM, model=name)
        assert msg.content[0].text == ANSWER and msg.model == name


def _recorded() -> dict[str, Any]:
    return json.loads(RECORDED.read_text())


def _replay(server: RouterServer, recorded: dict[str, Any], body: dict[str, Any]) -> list[tuple[str, dict]]:
    headers = dict(recorded["headers"], **{"x-api-key": KEY})
    r = httpx.post(server.base_url + recorded["path"], json=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    return sse(r)


def test_recorded_claude_code_turns_hit_the_prefix_cache(server: RouterServer) -> None:
    recorded = _recorded()
    first = recorded["body"]
    events = _replay(server, recorded, first)
    assert_anthropic_order([n for n, _ in events])
    final = events[-2][1]
    assert final["delta"]["stop_reason"] in ("end_turn", "max_tokens", "tool_use")
    usage1 = final["usage"]
    prompt1 = usage1["input_tokens"] + usage1["cache_read_input_tokens"]
    reply = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    # turn 2: a new billing hash, the reply and a new question appended, as Claude Code sends it
    second = copy.deepcopy(first)
    second["system"][0]["text"] = second["system"][0]["text"].replace("cch=eb6c6", "cch=0aaa9")
    second["messages"] += [
        {"role": "assistant", "content": [{"type": "text", "text": reply or "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": "And of Italy?"}]},
    ]
    usage2 = _replay(server, recorded, second)[-2][1]["usage"]
    assert usage2["cache_read_input_tokens"] > 0.9 * prompt1, (usage1, usage2)
    count = httpx.post(
        f"{server.base_url}/v1/messages/count_tokens?beta=true",
        json={k: first[k] for k in ("model", "system", "messages", "tools")},
        headers=dict(recorded["headers"], **{"x-api-key": KEY}),
    )
    assert count.json() == {"input_tokens": prompt1}
