"""The conversation core: Chat Completions requests convert into the one conversation model, the model turns into
what templates read, and the generation service's call handling is the same for every API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlx_router.conversation.model import (
    Conversation,
    CustomTool,
    FilePart,
    FunctionTool,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    ToolChoice,
)
from mlx_router.conversation.normalize import template_messages, template_tools
from mlx_router.errors import InvalidRequestError
from mlx_router.parsing.events import ContentDelta, ToolCallArgsDelta, ToolCallStart
from mlx_router.protocol.chat import ChatCompletionRequest
from mlx_router.serving.generation import _CallFilter
from mlx_router.serving.prepare import PreparedGeneration, ToolPlan


def _chat(**body: Any) -> Conversation:
    return ChatCompletionRequest.model_validate({"model": "m", **body}).to_conversation()


def test_chat_request_converts_roles_parts_calls_and_options() -> None:
    conv = _chat(
        messages=[
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
                    {"type": "text", "text": "b"},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA", "filename": "x.pdf"}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "42"},
        ],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "f"}},
        parallel_tool_calls=False,
        max_completion_tokens=7,
        temperature=0,
        stop="END",
        logprobs=True,
        top_logprobs=2,
        response_format={"type": "json_object"},
    )
    system, user, assistant, tool = conv.messages
    assert system.role == "system" and system.text() == "be brief"
    assert user.content == [
        TextPart("a"),
        ImagePart("data:image/png;base64,AA", "low"),
        TextPart("b"),
        FilePart("data:application/pdf;base64,AA", "x.pdf"),
    ]
    assert user.text() == "ab" and user.has_media()
    assert assistant.content is None and assistant.tool_calls == [ToolCall("call_0", "f", '{"x": 1}')]
    assert tool.role == "tool" and tool.tool_call_id == "call_0"
    assert conv.tools == [FunctionTool("f", None, {"type": "object"}, None)]
    assert conv.tool_choice == ToolChoice("named", "f") and conv.parallel_tool_calls is False
    assert conv.max_tokens == 7 and conv.sampling.temperature == 0 and conv.stop == ["END"]
    assert conv.logprobs == 2 and conv.response_format == {"type": "json_object"}
    assert conv.max_tokens_policy == "refuse"


@pytest.mark.parametrize(
    "part, message",
    [
        ({"type": "image_url", "image_url": {}}, "image_url.url"),
        ({"type": "file", "file": {"file_id": "file-1"}}, "file_id is not supported"),
        ({"type": "input_audio"}, "input_audio"),
    ],
)
def test_bad_parts_are_a_400_naming_the_message(part: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as e:
        _chat(messages=[{"role": "user", "content": "hi"}, {"role": "user", "content": [part]}])
    assert e.value.param == "messages.1.content"


def test_templates_read_custom_tools_as_functions_of_one_string() -> None:
    conv = Conversation(
        model="m",
        messages=[
            Message("user", [TextPart("x"), TextPart("y")]),
            Message("assistant", None, tool_calls=[ToolCall("c1", "apply_patch", "*** Begin Patch\n")]),
            Message("tool", [TextPart("ok")], tool_call_id="c1"),
        ],
        tools=[CustomTool("apply_patch", "edit files", "lark", "start: /.+/")],
    )
    msgs = template_messages(conv)
    assert msgs[0] == {"role": "user", "content": "xy"}
    call = msgs[1]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"input": "*** Begin Patch\n"}
    (tool,) = template_tools(conv.tools)
    assert tool["function"]["parameters"]["required"] == ["input"]


def _prepared(tools: list, parallel: bool = True) -> PreparedGeneration:
    conv = Conversation(model="m", messages=[Message("user", [TextPart("hi")])], tools=tools)
    plan = ToolPlan(tools=template_tools(tools), parser="hermes", mode="auto", parallel=parallel)
    return PreparedGeneration("id", 0, conv, None, None, [], "", plan, False)  # type: ignore[arg-type]


def test_a_custom_call_carries_its_raw_input_once_complete() -> None:
    calls = _CallFilter(_prepared([CustomTool("apply_patch"), FunctionTool("f")]))
    first = calls.filter(
        [ToolCallStart(0, "a", "apply_patch"), ToolCallArgsDelta(0, '{"input": "line 1\\n'), ContentDelta("x")],
        last=False,
    )
    assert first == [ToolCallStart(0, "a", "apply_patch"), ContentDelta("x")]  # held: the JSON is not complete
    rest = calls.filter(
        [ToolCallArgsDelta(0, 'line 2"}'), ToolCallStart(1, "b", "f"), ToolCallArgsDelta(1, "{}")], last=True
    )
    assert rest == [ToolCallArgsDelta(0, "line 1\nline 2"), ToolCallStart(1, "b", "f"), ToolCallArgsDelta(1, "{}")]
    assert calls.count == 2


@pytest.mark.parametrize(
    ("written", "input_"),
    [
        ('{"input": "*** Begin Patch\\n*** Add', "*** Begin Patch\n*** Add"),
        ('{"input": "caf\\u00', "caf"),  # an escape cut in half is dropped
        ('{"input": "x\\', "x"),
        ('{"inp', ""),  # cut before the input began
        ('{"input": ', ""),
        ("a bare input", "a bare input"),
    ],
)
def test_a_custom_call_cut_by_the_limit_carries_the_input_written(written: str, input_: str) -> None:
    calls = _CallFilter(_prepared([CustomTool("apply_patch")]))
    out = calls.filter([ToolCallStart(0, "a", "apply_patch"), ToolCallArgsDelta(0, written)], last=True)
    assert out[-1] == ToolCallArgsDelta(0, input_)


def test_without_parallel_calls_only_the_first_is_kept() -> None:
    calls = _CallFilter(_prepared([FunctionTool("f")], parallel=False))
    out = calls.filter(
        [
            ToolCallStart(0, "a", "f"),
            ToolCallArgsDelta(0, "{}"),
            ToolCallStart(1, "b", "f"),
            ToolCallArgsDelta(1, "{}"),
        ],
        last=True,
    )
    assert out == [ToolCallStart(0, "a", "f"), ToolCallArgsDelta(0, "{}")] and calls.count == 1
