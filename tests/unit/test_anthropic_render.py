"""The Anthropic renderer over API-neutral events: content blocks in the output's order, stop reasons, usage in
Anthropic's parts, the stream's events in Anthropic's order (read back by the official SDK's own accumulator),
and a failure mid-stream as an `error` event."""

import asyncio
import json

import pytest

from mlx_router.api.sse import encode_stream
from mlx_router.errors import OverloadedError
from mlx_router.parsing.events import ContentDelta, ReasoningDelta, ToolCallArgsDelta, ToolCallStart
from mlx_router.serving.anthropic import ANTHROPIC_EVENTS, MessageRenderer, signature
from mlx_router.serving.generation import Finished, LogprobsDelta
from mlx_router.serving.session import UsageCounts

USAGE = UsageCounts(prompt_tokens=100, completion_tokens=7, cached_tokens=60)


async def source(*events, error=None):
    for ev in events:
        yield ev
    if error is not None:
        raise error


def whole(*events):
    return asyncio.run(MessageRenderer("msg-1", "claude-x", 100).message(source(*events)))


def streamed(*events, error=None) -> list[tuple[str, dict]]:
    """The stream as a client reads it: (event name, data) pairs off the SSE bytes."""

    async def run():
        renderer = MessageRenderer("msg-1", "claude-x", 100)
        body = encode_stream(renderer.stream(source(*events, error=error)), ANTHROPIC_EVENTS, 10)
        return "".join([x async for x in body])

    out = []
    for block in asyncio.run(run()).strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[6:])
        assert data["type"] == name_line[7:], "every event's data names its type as the event line does"
        out.append((name_line[7:], data))
    return out


THINK_TEXT_CALLS = (
    ReasoningDelta("think"),
    ReasoningDelta("ing"),
    LogprobsDelta([]),
    ContentDelta("Hel"),
    ContentDelta("lo"),
    ToolCallStart(0, "call_a", "get_weather"),
    ToolCallArgsDelta(0, '{"location": '),
    ToolCallArgsDelta(0, '"Paris"}'),
    ToolCallStart(1, "call_b", "get_time"),
    ToolCallArgsDelta(1, "{}"),
    Finished("tool_calls", USAGE),
)


def test_message_blocks_in_order_with_signature_and_parsed_input():
    msg = whole(*THINK_TEXT_CALLS)
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg.content[0].thinking == "thinking" and msg.content[0].signature == signature("thinking")
    assert msg.content[1].text == "Hello"
    assert (msg.content[2].id, msg.content[2].name, msg.content[2].input) == (
        "call_a",
        "get_weather",
        {"location": "Paris"},
    )
    assert msg.content[3].input == {}
    assert msg.stop_reason == "tool_use" and msg.stop_sequence is None
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (40, 60, 7)
    assert msg.model == "claude-x" and msg.id == "msg-1"


@pytest.mark.parametrize(
    ("finished", "reason", "sequence"),
    [
        (Finished("stop", USAGE), "end_turn", None),
        (Finished("stop", USAGE, stop_sequence="END"), "stop_sequence", "END"),
        (Finished("length", USAGE), "max_tokens", None),
        (Finished("length", USAGE, context_full=True), "model_context_window_exceeded", None),
    ],
)
def test_stop_reasons(finished, reason, sequence):
    msg = whole(ContentDelta("x"), finished)
    assert (msg.stop_reason, msg.stop_sequence) == (reason, sequence)
    delta = streamed(ContentDelta("x"), finished)[-2][1]
    assert delta["delta"] == {"stop_reason": reason, "stop_sequence": sequence}


def test_a_call_cut_by_max_tokens_has_an_empty_input():
    msg = whole(ToolCallStart(0, "c", "f"), ToolCallArgsDelta(0, '{"a": "unfini'), Finished("length", USAGE))
    assert msg.content[0].input == {} and msg.stop_reason == "max_tokens"


def test_stream_events_in_anthropics_order():
    events = streamed(*THINK_TEXT_CALLS)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",  # thinking
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",  # its signature
        "content_block_stop",
        "content_block_start",  # text
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # first call
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # second call
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] == 100
    deltas = [d["delta"] for name, d in events if name == "content_block_delta"]
    assert [d["type"] for d in deltas] == ["thinking_delta"] * 2 + ["signature_delta"] + ["text_delta"] * 2 + [
        "input_json_delta"
    ] * 3
    assert deltas[2]["signature"] == signature("thinking")
    indexes = [d["index"] for name, d in events if name.startswith("content_block")]
    assert indexes == [0] * 5 + [1] * 4 + [2] * 4 + [3] * 3
    final = events[-2][1]
    assert final["usage"] == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 0,
    }


def test_the_sdk_accumulates_the_stream_into_the_same_message():
    from anthropic.lib.streaming._messages import accumulate_event  # what MessageStream runs per event

    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for _, data in streamed(*THINK_TEXT_CALLS):
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    assert snapshot.model_dump(include={"content", "stop_reason", "usage"}, exclude_none=True) == whole(
        *THINK_TEXT_CALLS
    ).model_dump(include={"content", "stop_reason", "usage"})


def test_an_error_mid_stream_is_an_error_event_and_the_end():
    events = streamed(ContentDelta("a"), error=OverloadedError("queue full"))
    assert [n for n, _ in events] == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "rate_limit_error", "message": "queue full"}}
