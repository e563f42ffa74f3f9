"""Anthropic Messages requests as the core's Conversation: blocks, tools, tool results, thinking, Claude Code's
billing line and system text inside messages; validation refusals."""

import json

import pytest
from pydantic import ValidationError

from mlx_router.config.settings import parse_settings
from mlx_router.conversation.model import FilePart, FunctionTool, ImagePart, TextPart, ToolCall, ToolChoice
from mlx_router.protocol.anthropic import CountTokensRequest, MessagesRequest

BILLING = "x-anthropic-billing-header: cc_version=2.1.100.7b4; cc_entrypoint=cli; cch=eb6c6;"


def request(**fields):
    body = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **fields}
    return MessagesRequest.model_validate(body)


def test_text_system_and_sampling():
    conv = request(system="be brief", temperature=0, top_p=0.5, top_k=3, stop_sequences=["END", ""]).to_conversation()
    assert [(m.role, m.text()) for m in conv.messages] == [("system", "be brief"), ("user", "hi")]
    assert conv.sampling.temperature == 0 and conv.sampling.top_p == 0.5 and conv.sampling.top_k == 3
    assert conv.stop == ["END"]
    assert conv.max_tokens == 64 and conv.max_tokens_policy == "cap"
    assert conv.param_prefix == "messages"


def test_billing_line_is_dropped_from_system_blocks_and_strings():
    blocks = [
        {"type": "text", "text": BILLING},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
    ]
    assert request(system=blocks).to_conversation().messages[0].content == [TextPart("You are Claude Code.")]
    conv = request(system=BILLING + "\nYou are Claude Code.").to_conversation()
    assert conv.messages[0].text() == "You are Claude Code."
    # only at the top: the same words later in the prompt are the user's business
    kept = request(system="intro\n" + BILLING).to_conversation()
    assert kept.messages[0].text() == "intro\n" + BILLING


def test_system_text_inside_messages_stays_in_place():
    conv = request(
        system="top",
        messages=[
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "system", "content": [{"type": "text", "text": "reminder"}]},
            {"role": "user", "content": "three"},
        ],
    ).to_conversation()
    assert [(m.role, m.text()) for m in conv.messages] == [
        ("system", "top"),
        ("user", "one"),
        ("assistant", "two"),
        ("system", "reminder"),
        ("user", "three"),
    ]


def test_images_and_pdf_documents_become_data_uri_parts():
    content = [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {
            "type": "document",
            "title": "a.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        },
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}},
    ]
    conv = request(messages=[{"role": "user", "content": content}]).to_conversation()
    assert conv.messages[0].content == [
        TextPart("look"),
        ImagePart("data:image/png;base64,AAAA"),
        FilePart("data:application/pdf;base64,JVBE", filename="a.pdf"),
        TextPart("plain doc"),
    ]


def test_tool_use_and_results_round_trip_into_calls_and_tool_messages():
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "need a tool", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": True,
                    "content": [{"type": "text", "text": "<tool_use_error>no</tool_use_error>"}],
                },
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    tools = [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}]
    conv = request(messages=messages, tools=tools).to_conversation()
    assistant = conv.messages[1]
    assert assistant.reasoning == "need a tool" and assistant.text() == "Checking."
    assert assistant.tool_calls == [ToolCall("toolu_1", "get_weather", json.dumps({"city": "Paris"}))]
    assert [(m.role, m.tool_call_id, m.text()) for m in conv.messages[2:]] == [
        ("tool", "toolu_1", "sunny"),
        ("tool", "toolu_2", "<tool_use_error>no</tool_use_error>"),
        ("user", None, "thanks"),
    ]
    assert conv.tools == [FunctionTool("get_weather", "d", {"type": "object"})]


def test_server_tools_are_left_out():
    tools = [
        {"type": "web_search_20250305", "name": "web_search"},
        {"type": "custom", "name": "f", "input_schema": {"type": "object"}},
    ]
    assert [t.name for t in request(tools=tools).to_conversation().tools] == ["f"]


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, ToolChoice("auto"), True),
        ({"type": "any"}, ToolChoice("required"), True),
        ({"type": "none"}, ToolChoice("none"), True),
        ({"type": "tool", "name": "f", "disable_parallel_tool_use": True}, ToolChoice("named", "f"), False),
    ],
)
def test_tool_choice(choice, expected, parallel):
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    conv = request(tools=tools, tool_choice=choice).to_conversation()
    assert conv.tool_choice == expected and conv.parallel_tool_calls is parallel


@pytest.mark.parametrize(
    ("thinking", "switch"),
    [
        (None, None),
        ({"type": "enabled", "budget_tokens": 2048}, True),
        ({"type": "disabled"}, False),
        ({"type": "adaptive"}, None),
    ],
)
def test_thinking_switch(thinking, switch):
    fields = {} if thinking is None else {"thinking": thinking}
    assert request(**fields).to_conversation().thinking is switch


def test_alias_resolved_model_goes_into_the_conversation():
    settings = parse_settings({"defaults": {"model_aliases": {"claude-haiku-4-5": "small", "claude-*": "big"}}})
    d = settings.defaults
    assert d.resolve_model("claude-haiku-4-5") == "small"
    assert d.resolve_model("claude-sonnet-4-5-20250929") == "big"
    assert d.resolve_model("local-model") == "local-model"
    conv = request(model="claude-sonnet-4-5").to_conversation(d.resolve_model("claude-sonnet-4-5"))
    assert conv.model == "big"


def test_count_tokens_takes_no_max_tokens():
    conv = CountTokensRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert conv.to_conversation().messages[0].text() == "hi"


@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": None},
        {"messages": []},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]}]},
        {"messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "a"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "http://x"}}]}
            ]
        },
        {"tool_choice": {"type": "tool"}},
        {"temperature": 1.5},
        {"stop_sequences": ["s"] * 17},
        {"system": "\ud800"},
    ],
)
def test_invalid_requests_are_refused_by_validation(fields):
    body = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **fields}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(ValidationError):
        MessagesRequest.model_validate(body)


def test_inner_system_messages_fold_into_the_user_turn_beside_them():
    from mlx_router.protocol.anthropic import fold_inner_system

    reminder = "<system-reminder>\nrule\n</system-reminder>\n"
    conv = request(
        system="top",
        messages=[
            {"role": "user", "content": "a"},
            {"role": "system", "content": "rule"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "system", "content": "rule"},
        ],
    ).to_conversation()
    folded = fold_inner_system(conv)
    assert folded is not None
    assert [(m.role, m.text()) for m in folded.messages] == [
        ("system", "top"),
        ("user", "a" + reminder),
        ("assistant", "b"),
        ("user", "c" + reminder),
    ]
    assert fold_inner_system(request(system="top").to_conversation()) is None


def test_structured_output_and_effort():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "schema": schema}
    expected = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    conv = request(output_config={"format": fmt, "effort": "max"}).to_conversation()
    assert conv.response_format == expected and conv.reasoning_effort == "high"
    assert request(output_format=fmt).to_conversation().response_format == expected  # the beta's name
    plain = request().to_conversation()
    assert plain.response_format is None and plain.reasoning_effort is None


def test_search_results_and_tool_references_reach_the_model_as_text():
    found = {
        "type": "search_result",
        "title": "Doc",
        "source": "https://x",
        "content": [{"type": "text", "text": "hit"}],
    }
    reference = {"type": "tool_reference", "tool_name": "Grep"}
    messages = [
        {"role": "user", "content": [found]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "ToolSearch", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [reference, found]}]},
    ]
    conv = request(messages=messages).to_conversation()
    assert conv.messages[0].text() == "Doc\nhttps://x\nhit"
    assert conv.messages[2].text() == "Tool available: Grep\nDoc\nhttps://x\nhit"
