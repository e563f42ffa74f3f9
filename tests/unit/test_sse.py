"""Stream encoding: SSE framing, keep-alives, error events then [DONE], the other formats."""

import asyncio
import json

from mlx_router.api.sse import encode_stream
from mlx_router.errors import OverloadedError
from mlx_router.protocol.chat import ChatChunkChoice, ChatCompletionChunk, DeltaMessage


def chunk(text):
    return ChatCompletionChunk(
        id="x", created=1, model="m", choices=[ChatChunkChoice(delta=DeltaMessage(content=text))]
    )


async def collect(gen):
    return [x async for x in gen]


async def items(*xs, delay=0.0, error=None):
    for x in xs:
        if delay:
            await asyncio.sleep(delay)
        yield x
    if error:
        raise error


def test_sse_framing():
    out = asyncio.run(collect(encode_stream(items(chunk("a"), chunk("b")), "sse", 10)))
    assert out[-1] == "data: [DONE]\n\n"
    first = json.loads(out[0][len("data: ") :])
    assert first["choices"][0]["delta"]["content"] == "a"
    assert first["choices"][0]["finish_reason"] is None


def test_keepalive_while_waiting():
    out = asyncio.run(collect(encode_stream(items(chunk("a"), delay=0.15), "sse", 0.05)))
    assert ": keep-alive\n\n" in out
    assert out[-1] == "data: [DONE]\n\n"


def test_error_mid_stream_then_done():
    err = OverloadedError("full")
    out = asyncio.run(collect(encode_stream(items(chunk("a"), error=err), "sse", 10)))
    body = json.loads(out[1][len("data: ") :])
    assert body["error"]["type"] == "rate_limit_error"
    assert out[-1] == "data: [DONE]\n\n"


def test_internal_error_hides_details():
    out = asyncio.run(collect(encode_stream(items(error=RuntimeError("secret path /x")), "sse", 10)))
    assert "secret" not in "".join(out)
    assert json.loads(out[0][6:])["error"]["code"] == "internal_error"


def test_json_lines_and_array():
    lines = asyncio.run(collect(encode_stream(items(chunk("a"), chunk("b")), "json_lines", 10)))
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
