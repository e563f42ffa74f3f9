"""Stream encoding: SSE framing, keep-alives, error events then [DONE], the other formats."""

import asyncio
import json

import pytest

from mlx_router.api.sse import chunk_json, encode_stream
from mlx_router.errors import OverloadedError
from mlx_router.protocol.chat import ChatChunkChoice, ChatCompletionChunk, ChunkTemplate, DeltaMessage


def chunk(text):
    return ChatCompletionChunk(
        id="x", created=1, model="m", choices=[ChatChunkChoice(delta=DeltaMessage(content=text))]
    )


async def collect(gen):
    return [x async for x in gen]


def sse_events(gen) -> list[str]:
    """What a client reads: the stream's bytes cut into SSE events (writes may carry several)."""
    body = "".join(asyncio.run(collect(gen)))
    assert body.endswith("\n\n")
    return [e + "\n\n" for e in body[:-2].split("\n\n")]


async def items(*xs, delay=0.0, error=None):
    for x in xs:
        if delay:
            await asyncio.sleep(delay)
        yield x
    if error:
        raise error


def test_sse_framing():
    out = sse_events(encode_stream(items(chunk("a"), chunk("b")), "sse", 10))
    assert len(out) == 3 and out[-1] == "data: [DONE]\n\n"
    first = json.loads(out[0][len("data: ") :])
    assert first["choices"][0]["delta"]["content"] == "a"
    assert first["choices"][0]["finish_reason"] is None


def test_a_chunk_given_as_json_goes_out_as_it_is():
    out = sse_events(encode_stream(items('{"x":1}', chunk("b")), "sse", 10))
    assert out[0] == 'data: {"x":1}\n\n'
    assert json.loads(out[1][len("data: ") :])["choices"][0]["delta"]["content"] == "b"


def test_chunks_that_wait_together_leave_in_one_write_and_a_lone_chunk_at_once():
    async def run():
        gate = asyncio.Event()

        async def source():
            yield chunk("a")
            await gate.wait()
            yield chunk("b")
            yield chunk("c")

        gen = encode_stream(source(), "sse", 10)
        first = await gen.__anext__()  # sent before the next chunk exists
        gate.set()
        rest = [x async for x in gen]
        return first, rest

    first, rest = asyncio.run(run())
    assert first.count("data: ") == 1
    assert rest[0].count("data: ") == 2 and rest[-1] == "data: [DONE]\n\n"


def test_keepalive_while_waiting():
    out = asyncio.run(collect(encode_stream(items(chunk("a"), delay=0.15), "sse", 0.05)))
    assert ": keep-alive\n\n" in "".join(out)
    assert out[-1] == "data: [DONE]\n\n"


def test_error_mid_stream_then_done():
    err = OverloadedError("full")
    out = sse_events(encode_stream(items(chunk("a"), error=err), "sse", 10))
    body = json.loads(out[1][len("data: ") :])
    assert body["error"]["type"] == "rate_limit_error"
    assert out[-1] == "data: [DONE]\n\n"


def test_internal_error_hides_details():
    out = asyncio.run(collect(encode_stream(items(error=RuntimeError("secret path /x")), "sse", 10)))
    assert "secret" not in "".join(out)
    assert json.loads(out[0][6:])["error"]["code"] == "internal_error"


def test_json_lines_and_array():
    lines = "".join(asyncio.run(collect(encode_stream(items(chunk("a"), chunk("b")), "json_lines", 10)))).split("\n")
    assert [json.loads(x)["choices"][0]["delta"]["content"] for x in lines if x.strip()] == ["a", "b"]
    arr = "".join(asyncio.run(collect(encode_stream(items(chunk("a"), chunk("b")), "json_array", 10))))
    assert [c["choices"][0]["delta"]["content"] for c in json.loads(arr)] == ["a", "b"]
    assert json.loads("".join(asyncio.run(collect(encode_stream(items(), "json_array", 10))))) == []


def test_a_client_leaving_mid_stream_closes_the_source_and_calls_on_close():
    closed: list[str] = []

    async def source():
        try:
            yield chunk("a")
            await asyncio.sleep(10)  # the next token never comes before the client leaves
            yield chunk("b")
        finally:
            closed.append("source")

    async def on_close():
        closed.append("on_close")

    async def run():
        gen = encode_stream(source(), "sse", 10, on_close=on_close)
        first = await gen.__anext__()
        await gen.aclose()  # what the server does when the client disconnects
        return first

    first = asyncio.run(run())
    assert json.loads(first[len("data: ") :])["choices"][0]["delta"]["content"] == "a"
    assert closed == ["source", "on_close"]


@pytest.mark.parametrize("text", ["a", "", 'quote " and \\ back', "line\nbreak\ttab", "héllo 世界 🎉", "\u0000\u001f"])
@pytest.mark.parametrize("field", ["content", "reasoning_content"])
def test_a_text_chunk_template_writes_what_the_chunk_model_dumps(text, field):
    model = ChatCompletionChunk(
        id="chatcmpl-1",
        created=1700000000,
        model='my/"model"',
        choices=[ChatChunkChoice(delta=DeltaMessage(**{field: text}))],
    )
    assert ChunkTemplate("chatcmpl-1", 1700000000, 'my/"model"').text(field, text) == chunk_json(model)


def _anthropic_style():
    from mlx_router.api.errors import anthropic_error_body
    from mlx_router.api.sse import NamedEvent, NamedEvents

    return NamedEvents(
        error=lambda e: NamedEvent("error", anthropic_error_body(e)),
        keepalive=NamedEvent("ping", {"type": "ping"}),
    )


def test_named_events_carry_their_event_line_and_no_done_marker():
    from mlx_router.api.sse import NamedEvent

    events = [NamedEvent("message_start", {"type": "message_start"}), NamedEvent("message_stop", '{"type":"x"}')]
    out = sse_events(encode_stream(items(*events), _anthropic_style(), 10))
    assert out == [
        'event: message_start\ndata: {"type":"message_start"}\n\n',
        'event: message_stop\ndata: {"type":"x"}\n\n',
    ]


def test_named_events_keepalive_is_the_apis_ping_and_an_error_its_error_event():
    from mlx_router.api.sse import NamedEvent

    start = NamedEvent("message_start", {"type": "message_start"})
    body = "".join(asyncio.run(collect(encode_stream(items(start, delay=0.15), _anthropic_style(), 0.05))))
    assert 'event: ping\ndata: {"type":"ping"}\n\n' in body
    out = sse_events(encode_stream(items(start, error=OverloadedError("full")), _anthropic_style(), 10))
    assert out[-1].startswith("event: error\ndata: ")
    assert json.loads(out[-1].split("data: ", 1)[1]) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "full"},
    }
    hidden = sse_events(encode_stream(items(error=RuntimeError("secret /x")), _anthropic_style(), 10))
    assert "secret" not in hidden[0] and '"api_error"' in hidden[0]
