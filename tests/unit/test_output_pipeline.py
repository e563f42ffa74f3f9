"""OutputPipeline: reasoning first, then tool calls on the content; streamed and whole must agree."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from mlx_router.parsing.events import (
    ContentDelta,
    OutputEvent,
    ParsedOutput,
    ReasoningDelta,
    ToolCallArgsDelta,
    ToolCallStart,
    collect,
)
from mlx_router.parsing.pipeline import OutputPipeline
from mlx_router.parsing.registry import get_reasoning_parser, get_tool_parser


def tool(name: str, **properties: str) -> dict[str, Any]:
    props = {key: {"type": kind} for key, kind in properties.items()}
    return {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {"type": "object", "properties": props, "required": list(props)},
        },
    }


WEATHER = [tool("get_weather", location="string")]
BASH = [tool("bash", command="string")]
DS = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"

# (id, reasoning parser, opened by the prompt, tool parser, tools, output, reasoning, content, calls)
CASES = [
    # Qwen3 thinking, then a call (Qwen function-calling guide, "think" mode results)
    (
        "qwen3-think-then-call",
        "think",
        False,
        "hermes",
        WEATHER,
        "<think>\nThe user wants the weather in Paris. I will call get_weather.\n</think>\n\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>',
        "The user wants the weather in Paris. I will call get_weather.",
        None,
        [("get_weather", {"location": "Paris"})],
    ),
    (
        "qwen3-opened-then-text-and-call",
        "think",
        True,
        "hermes",
        WEATHER,
        'Need the weather.\n</think>\n\nLet me check.\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"location": "Rome"}}\n</tool_call>',
        "Need the weather.",
        "Let me check.\n",
        [("get_weather", {"location": "Rome"})],
    ),
    (
        "qwen3-answer-only",
        "think",
        False,
        "hermes",
        WEATHER,
        "<think>\nEasy.\n</think>\n\nIt is sunny.",
        "Easy.",
        "It is sunny.",
        [],
    ),
    # Qwen3.5 / Qwen3-Coder: a call opened inside the thinking
    # (vLLM tests/reasoning/test_qwen3_reasoning_parser.py, TOOL_CALL_NO_THINK_END)
    (
        "qwen35-call-inside-thinking",
        "think",
        True,
        "qwen3_coder",
        BASH,
        "I need to read the file.\n\n<tool_call>\n<function=bash>\n<parameter=command>\ncat /etc/hosts\n"
        "</parameter>\n</function>\n</tool_call>",
        "I need to read the file.",
        None,
        [("bash", {"command": "cat /etc/hosts"})],
    ),
    # DeepSeek-R1-0528: thinking opened by the prompt, then a V3-style call
    # (call text from vLLM tests/tool_parsers/test_deepseekv3_tool_parser.py)
    (
        "r1-think-then-call",
        "think",
        True,
        "deepseek_v3",
        WEATHER,
        "The user asks for weather.\n</think>\n\n"
        + DS
        + '{"location": "Tokyo"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        "The user asks for weather.",
        None,
        [("get_weather", {"location": "Tokyo"})],
    ),
    # gpt-oss: the harmony tool parser separates the thinking; a reasoning parser given too is not used
    (
        "harmony",
        "think",
        False,
        "harmony",
        WEATHER,
        "<|channel|>analysis<|message|>Need to use function get_weather.<|end|><|start|>assistant"
        "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
        '{"location":"San Francisco"}',
        "Need to use function get_weather.",
        None,
        [("get_weather", {"location": "San Francisco"})],
    ),
    # a malformed call after thinking comes back as text
    (
        "think-then-bad-call",
        "think",
        False,
        "hermes",
        WEATHER,
        '<think>x</think><tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        "x",
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        [],
    ),
    # gpt-oss without tools: the harmony reasoning parser alone; a message to a function is only text
    (
        "harmony-no-tools",
        "harmony",
        False,
        None,
        None,
        "<|channel|>analysis<|message|>Simple.<|end|><|start|>assistant<|channel|>final<|message|>Hi!<|return|>",
        "Simple.",
        "Hi!",
        [],
    ),
    ("no-parsers", None, False, None, None, "<think>raw</think> text", None, "<think>raw</think> text", []),
    ("reasoning-only", "think", False, None, None, "<think>a</think>b <tool_call>", "a", "b <tool_call>", []),
    (
        "tools-only",
        None,
        False,
        "hermes",
        WEATHER,
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Oslo"}}\n</tool_call>',
        None,
        None,
        [("get_weather", {"location": "Oslo"})],
    ),
]


def build(case: tuple[Any, ...]) -> OutputPipeline:
    _, reasoning, opened, tools, tool_list, *_ = case
    reasoner = get_reasoning_parser(reasoning)(in_reasoning=opened) if reasoning else None
    return OutputPipeline(reasoner, get_tool_parser(tools)(tool_list) if tools else None)


def stream(pipeline: OutputPipeline, chunks: list[str]) -> list[OutputEvent]:
    return [e for chunk in chunks for e in pipeline.feed(chunk)] + pipeline.finish()


def summary(parsed: ParsedOutput) -> tuple[Any, ...]:
    return parsed.content, parsed.reasoning, [(c.name, c.arguments) for c in parsed.tool_calls]


def random_chunks(text: str, seed: int) -> list[str]:
    rng, chunks, pos = random.Random(seed), [], 0
    while pos < len(text):
        size = rng.randint(1, 10)
        chunks.append(text[pos : pos + size])
        pos += size
    return chunks


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_parse_gives_the_table_answer(case: tuple[Any, ...]) -> None:
    *_, output, reasoning, content, calls = case
    parsed = build(case).parse(output)
    assert (parsed.reasoning, parsed.content) == (reasoning, content)
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == calls


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_stream_agrees_with_parse(case: tuple[Any, ...]) -> None:
    output = case[5]
    expected = summary(build(case).parse(output))
    assert summary(collect(stream(build(case), list(output)))) == expected
    for seed in range(4):
        assert summary(collect(stream(build(case), random_chunks(output, seed)))) == expected


def test_one_feed_merges_neighbouring_deltas() -> None:
    events = build(CASES[1]).feed(CASES[1][5])
    kinds = [(type(e), getattr(e, "index", None)) for e in events]
    assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False))
    assert isinstance(events[0], ReasoningDelta) and isinstance(events[1], ContentDelta)
    assert isinstance(events[2], ToolCallStart) and isinstance(events[3], ToolCallArgsDelta)


def test_reasoning_then_call_streams_in_order() -> None:
    case = CASES[0]
    events = stream(build(case), list(case[5]))
    kinds = [type(e) for e in events]
    assert kinds.index(ToolCallStart) > max(i for i, k in enumerate(kinds) if k is ReasoningDelta)
    assert ContentDelta not in kinds
