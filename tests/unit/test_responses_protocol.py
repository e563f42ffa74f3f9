"""Responses requests convert themselves into the core's Conversation; the builder renders generation events
as OpenAI's items and stream events (order, sequence numbers, ids shared with the final Response)."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from mlx_router.conversation.model import CustomTool, FilePart, FunctionTool, ImagePart, TextPart, ToolCall, ToolChoice
from mlx_router.errors import InvalidRequestError
from mlx_router.parsing.events import ContentDelta, ReasoningDelta, ToolCallArgsDelta, ToolCallStart
from mlx_router.protocol.responses import ResponsesRequest
from mlx_router.protocol.responses_output import ResponseObject
from mlx_router.serving.response_builder import ResponseBuilder
from mlx_router.serving.response_store import ResponseStore

PNG = "data:image/png;base64,iVBORw0KGgo="
PDF = "data:application/pdf;base64,JVBERi0="


def request(**body: object) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", **body})


def test_a_string_input_and_instructions() -> None:
    conv = request(input="Hi", instructions="Be brief.").to_conversation()
    assert [(m.role, m.text()) for m in conv.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert conv.param_prefix == "input"
    assert conv.max_tokens_policy == "cap"


def test_history_items_become_chat_turns() -> None:
    conv = request(
        input=[
            {"role": "developer", "content": "Rules."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Hm."}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch\n"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "custom_tool_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "ok"}]},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Summed up."}]},
            {"type": "function_call", "call_id": "c3", "name": "get_time", "arguments": "{}"},
        ]
    ).to_conversation()
    roles = [m.role for m in conv.messages]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant"]
    turn = conv.messages[2]
    assert turn.text() == "Checking." and turn.reasoning == "Hm."
    assert turn.tool_calls == [
        ToolCall("c1", "get_weather", '{"city": "Paris"}'),
        ToolCall("c2", "apply_patch", "*** Begin Patch\n"),  # a custom call's raw input, as sent
    ]
    assert [(m.tool_call_id, m.text()) for m in conv.messages[3:5]] == [("c1", "sunny"), ("c2", "ok")]
    assert conv.messages[5].reasoning == "Summed up." and conv.messages[5].content is None


def test_images_and_files() -> None:
    conv = request(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": PNG, "detail": "low"},
                    {"type": "input_image", "image_url": PNG, "detail": "auto"},
                    {"type": "input_file", "file_data": PDF, "filename": "a.pdf"},
                ],
            }
        ]
    ).to_conversation()
    assert conv.messages[0].content == [
        TextPart("What is this?"),
        ImagePart(PNG, "low"),
        ImagePart(PNG, None),
        FilePart(PDF, "a.pdf"),
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "input_image", "file_id": "file-1"}, "input.0.content.0.image_url"),
        ({"type": "input_file", "file_id": "file-1"}, "input.0.content.0.file_data"),
    ],
)
def test_uploaded_files_are_refused_naming_the_part(part: dict, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        request(input=[{"role": "user", "content": [part]}]).to_conversation()
    assert info.value.param == param


def test_tools_function_custom_and_hosted(caplog: pytest.LogCaptureFixture) -> None:
    body = request(
        input="x",
        tools=[
            {"type": "function", "name": "f", "description": "F", "parameters": {"type": "object"}, "strict": True},
            {
                "type": "custom",
                "name": "apply_patch",
                "format": {"type": "grammar", "syntax": "lark", "definition": "start: /x/"},
            },
            {"type": "custom", "name": "note", "format": {"type": "text"}},
            {"type": "web_search"},
            {"type": "local_shell"},
        ],
        tool_choice={"type": "custom", "name": "apply_patch"},
        parallel_tool_calls=False,
    )
    with caplog.at_level(logging.INFO):
        conv = body.to_conversation()
    assert conv.tools == [
        FunctionTool("f", "F", {"type": "object"}, True),
        CustomTool("apply_patch", None, "lark", "start: /x/"),
        CustomTool("note", None, None, None),
    ]
    assert conv.tool_choice == ToolChoice("named", "apply_patch")
    assert conv.parallel_tool_calls is False
    assert "tools skipped (hosted tools this server does not run): web_search, local_shell" in caplog.text


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", ToolChoice()),
        ("required", ToolChoice("required")),
        ("none", ToolChoice("none")),
        ({"type": "function", "name": "f"}, ToolChoice("named", "f")),
    ],
)
def test_tool_choice(choice: object, expected: ToolChoice) -> None:
    assert request(input="x", tool_choice=choice).to_conversation().tool_choice == expected


def test_a_hosted_tool_choice_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as info:
        request(input="x", tool_choice={"type": "web_search_preview"}).to_conversation()
    assert info.value.param == "tool_choice"


def test_settings() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    conv = request(
        input="x",
        max_output_tokens=20,
        temperature=0,
        top_p=0.5,
        reasoning={"effort": "high"},
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}},
    ).to_conversation()
    assert conv.max_tokens == 20 and conv.sampling.temperature == 0 and conv.sampling.top_p == 0.5
    assert conv.reasoning_effort == "high" and conv.thinking is None
    assert conv.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    assert request(input="x", text={"format": {"type": "json_object"}}).to_conversation().response_format == {
        "type": "json_object"
    }
    assert request(input="x", text={"format": {"type": "text"}}).to_conversation().response_format is None
    off = request(input="x", reasoning={"effort": "none"}).to_conversation()
    assert off.thinking is False and off.reasoning_effort is None


@pytest.mark.parametrize(
    "body",
    [
        {"input": "x", "background": True},
        {"input": "x", "conversation": "conv_1"},
        {"input": "x", "tools": [{"type": "custom", "name": "t", "format": {"type": "grammar", "syntax": "lark"}}]},
        {"input": "x", "max_output_tokens": 0},
        {"input": [{"role": "tool", "content": "x"}]},
    ],
)
def test_invalid_bodies(body: dict) -> None:
    with pytest.raises(ValidationError):
        request(**body)


def builder(custom: set[str] | None = None) -> ResponseBuilder:
    return ResponseBuilder(ResponseObject(id="resp_1", created_at=0, model="m"), custom or set())


def test_builder_events_in_openai_order() -> None:
    b = builder({"apply_patch"})
    events = b.start()
    for ev in [
        ReasoningDelta("Think."),
        ReasoningDelta(" More."),
        ContentDelta("Hi"),
        ContentDelta("!"),
        ToolCallStart(0, "call_a", "f"),
        ToolCallArgsDelta(0, '{"a":'),
        ToolCallArgsDelta(0, "1}"),
        ToolCallStart(1, "call_b", "apply_patch"),
        ToolCallArgsDelta(1, "*** Begin Patch\n"),
    ]:
        events += b.feed(ev)
    events += b.finish("tool_calls", 10, 5, 4, 2)
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = b.response
    assert final.status == "completed" and final.usage is not None
    assert final.usage.model_dump() == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 15,
    }
    done = [e.item for e in events if e.type == "response.output_item.done"]  # type: ignore[union-attr]
    assert [i.model_dump() for i in done] == [i.model_dump() for i in final.output]
    reasoning, message, call, custom = final.output
    assert reasoning.content[0].text == "Think. More." and message.content[0].text == "Hi!"
    assert (call.type, call.call_id, call.arguments) == ("function_call", "call_a", '{"a":1}')
    assert (custom.type, custom.call_id, custom.input) == ("custom_tool_call", "call_b", "*** Begin Patch\n")
    assert len({i.id for i in final.output}) == 4


def test_builder_cut_at_the_limit_is_incomplete() -> None:
    b = builder()
    b.start()
    b.feed(ContentDelta("Hel"))
    events = b.finish("length", 3, 2, 0, 0)
    assert events[-1].type == "response.incomplete"
    assert b.response.status == "incomplete"
    assert b.response.incomplete_details is not None and b.response.incomplete_details.reason == "max_output_tokens"
    assert b.response.output[0].status == "incomplete"


def test_the_store_keeps_recent_responses_and_refuses_others() -> None:
    store = ResponseStore(2)
    b = builder()
    b.start()
    b.feed(ContentDelta("Paris."))
    b.finish("stop", 1, 1, 0, 0)
    first = request(input="Capital of France?")
    store.put("resp_1", first.input_items(), b.response.output)
    follow = request(input="And of Spain?", previous_response_id="resp_1")
    conv = follow.to_conversation(store.history("resp_1"))
    assert [(m.role, m.text()) for m in conv.messages] == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "And of Spain?"),
    ]
    store.put("resp_2", [], [])
    store.put("resp_3", [], [])
    with pytest.raises(InvalidRequestError) as info:
        store.history("resp_1")
    assert info.value.param == "previous_response_id"
    with pytest.raises(InvalidRequestError, match="keeps no responses"):
        ResponseStore(0).history("resp_1")


def test_instructions_as_messages() -> None:
    conv = request(
        input="Hi", instructions=[{"role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]}]
    ).to_conversation()
    assert [(m.role, m.text()) for m in conv.messages] == [("system", "Be brief."), ("user", "Hi")]
    with pytest.raises(InvalidRequestError) as info:
        request(
            input="Hi", instructions=[{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]
        ).to_conversation()
    assert info.value.param == "instructions.0.content.0.image_url"
