"""A custom tool's grammar reaches the tool-call grammar: the model's `{"input": ...}` may only hold text the
grammar accepts (checked token by token with llguidance and a real tokenizer, no model)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import llguidance
import pytest
from transformers import AutoTokenizer

from mlx_router.constraints.custom_tools import grammar_tools, input_pattern
from mlx_router.constraints.errors import UnsupportedSchemaError
from mlx_router.conversation.model import CustomTool
from mlx_router.core.constrained import _build_ll_tokenizer
from mlx_router.parsing.registry import get_tool_parser
from tests.fixtures.models import cached_tokenizer
from tests.unit.test_lark_regex import APPLY_PATCH

PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+Hello world\n*** End Patch\n"
APPLY = CustomTool("apply_patch", "Edit files.", "lark", APPLY_PATCH)


def template_tool(name: str) -> dict:
    schema = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}
    return {"type": "function", "function": {"name": name, "description": "d", "parameters": schema}}


def acceptor(flavour: str) -> Callable[[str, str], bool]:
    """accepts(grammar, text): whether the grammar lets a model of `flavour` write `text` and stop."""
    tokenizer = AutoTokenizer.from_pretrained(cached_tokenizer(flavour))
    ll = _build_ll_tokenizer(tokenizer, [tokenizer.eos_token_id])

    def check(grammar: str, text: str) -> bool:
        matcher = llguidance.LLMatcher(ll, grammar, log_level=0)
        ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        return bool(matcher.consume_tokens(ids)) and not matcher.is_error()

    return check


@pytest.fixture(scope="module")
def accepts() -> Callable[[str, str], bool]:
    return acceptor("qwen")


def hermes_call(name: str, value: str) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': {'input': value}})}\n</tool_call>"


def test_a_forced_custom_call_follows_its_lark_grammar(accepts: Callable[[str, str], bool]) -> None:
    tools = grammar_tools([template_tool("apply_patch")], [APPLY], forced=True)
    grammar = get_tool_parser("hermes")(tools).grammar(tools, mode="named", parallel=False)
    assert accepts(grammar, hermes_call("apply_patch", PATCH))
    assert not accepts(grammar, hermes_call("apply_patch", "please patch hello.txt"))
    assert not accepts(grammar, hermes_call("apply_patch", PATCH + "trailing"))
    extra = "<tool_call>\n" + json.dumps({"name": "apply_patch", "arguments": {"input": PATCH, "x": 1}})
    extra += "\n</tool_call>"
    assert not accepts(grammar, extra)  # the input and nothing else


def test_a_regex_grammar_and_free_text(accepts: Callable[[str, str], bool]) -> None:
    custom = [CustomTool("digits", None, "regex", r"[0-9]{3}"), CustomTool("note", None, None, None)]
    tools = grammar_tools([template_tool("digits"), template_tool("note")], custom, forced=False)
    assert "pattern" not in tools[1]["function"]["parameters"]["properties"]["input"]
    grammar = get_tool_parser("hermes")(tools).grammar(tools, mode="required", parallel=False)
    assert accepts(grammar, hermes_call("digits", "123"))
    assert not accepts(grammar, hermes_call("digits", "1234"))
    assert accepts(grammar, hermes_call("note", "anything at all\n"))


def test_the_template_tools_are_left_alone() -> None:
    tools = [template_tool("apply_patch")]
    grammar_tools(tools, [APPLY], forced=True)
    assert "pattern" not in tools[0]["function"]["parameters"]["properties"]["input"]


def test_a_grammar_that_cannot_be_enforced(caplog: pytest.LogCaptureFixture) -> None:
    recursive = CustomTool("nest", None, "lark", 'start: "(" start ")" | "x"')
    with pytest.raises(UnsupportedSchemaError, match="refers to itself"):
        grammar_tools([template_tool("nest")], [recursive], forced=True)
    with caplog.at_level(logging.INFO):
        tools = grammar_tools([template_tool("nest")], [recursive], forced=False)
    assert "pattern" not in tools[0]["function"]["parameters"]["properties"]["input"]
    assert "custom tool nest: its input is not constrained" in caplog.text
    with pytest.raises(UnsupportedSchemaError, match="custom tool bad's regex grammar"):
        input_pattern(CustomTool("bad", None, "regex", "(?<=a)b"))


def test_a_raw_string_format_holds_the_input_to_the_grammar_too() -> None:
    """Qwen3-Coder's XML calls write a string argument raw: the grammar's regex is the value itself."""
    accepts = acceptor("qwen3_coder")
    tools = grammar_tools([template_tool("apply_patch")], [APPLY], forced=True)
    parser = get_tool_parser("qwen3_coder")(tools)
    grammar = parser.grammar(tools, mode="named", parallel=False)

    def call(value: str) -> str:
        return (
            f"<tool_call>\n<function=apply_patch>\n<parameter=input>\n{value}\n</parameter>\n</function>\n</tool_call>"
        )

    assert accepts(grammar, call(PATCH))
    assert not accepts(grammar, call("please patch hello.txt"))
    (parsed,) = get_tool_parser("qwen3_coder")([template_tool("apply_patch")]).parse(call(PATCH)).tool_calls
    assert json.loads(parsed.arguments)["input"].rstrip("\n") == PATCH.rstrip("\n")
    free = parser.grammar([template_tool("apply_patch")], mode="named", parallel=False)
    assert accepts(free, call("please patch hello.txt"))  # without the grammar: free text
