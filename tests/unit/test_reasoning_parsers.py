"""The `<think>` reasoning parser: tables of Qwen3 / DeepSeek-R1 outputs, streamed and whole."""

from __future__ import annotations

import random

import pytest

from mlx_router.parsing.events import ContentDelta, ReasoningDelta
from mlx_router.parsing.reasoning.harmony import HarmonyReasoningParser
from mlx_router.parsing.reasoning.think import ThinkReasoningParser
from mlx_router.parsing.registry import (
    REASONING_PARSERS,
    UnknownParserError,
    detect_reasoning_parser,
    get_reasoning_parser,
)

TOOL_CALL_BODY = (
    "<tool_call>\n<function=bash>\n<parameter=command>\ncat /etc/hosts\n</parameter>\n</function>\n</tool_call>"
)

# (id, prompt opened <think>, output, reasoning, content)
CASES = [
    # vLLM tests/reasoning/test_qwen3_reasoning_parser.py
    (
        "with-think",
        False,
        "<think>This is a reasoning section</think>This is the rest",
        "This is a reasoning section",
        "This is the rest",
    ),
    (
        "without-start-token",
        True,
        "This is a reasoning section</think>This is the rest",
        "This is a reasoning section",
        "This is the rest",
    ),
    (
        "complete-reasoning",
        False,
        "<think>This is a reasoning section</think>",
        "This is a reasoning section",
        "",
    ),
    (
        "multiline",
        False,
        "<think>This is a reasoning\nsection</think>This is the rest\nThat",
        "This is a reasoning\nsection",
        "This is the rest\nThat",
    ),
    ("only-open-tag", False, "<think>This is a reasoning section", "This is a reasoning section", ""),
    ("truncated-no-start-token", True, "This is a reasoning section", "This is a reasoning section", ""),
    ("thinking-disabled", False, "This is plain content", None, "This is plain content"),
    (
        "thinking-disabled-tool-call",
        False,
        "I need to read the file.\n\n" + TOOL_CALL_BODY,
        None,
        "I need to read the file.\n\n" + TOOL_CALL_BODY,
    ),
    # Qwen3 model card (huggingface.co/Qwen/Qwen3-8B, thinking and enable_thinking=False): the newlines
    # the template writes around the block are not part of either field
    (
        "qwen3-newlines",
        False,
        "<think>\nThe user greets me. I should greet back.\n</think>\n\nHello! How can I help?",
        "The user greets me. I should greet back.",
        "Hello! How can I help?",
    ),
    ("qwen3-empty-block", False, "<think>\n\n</think>\n\nHello!", None, "Hello!"),
    # DeepSeek-R1 (its template ends the prompt with "<think>\n"):
    # vLLM tests/reasoning/test_deepseekr1_reasoning_parser.py
    (
        "r1-prompt-opened",
        True,
        "Okay, 2 + 2 is basic arithmetic.\n</think>\n\nThe answer is 4.",
        "Okay, 2 + 2 is basic arithmetic.",
        "The answer is 4.",
    ),
    ("r1-opened-twice", True, "<think>\nLet me see.\n</think>\n\nIt is 4.", "Let me see.", "It is 4."),
    # our own: markup-like text inside the thinking, and a close tag split by the tokenizer
    (
        "angle-brackets",
        False,
        "<think>Is a < b? Use <b>bold</b> and </thin k>.</think>Yes",
        "Is a < b? Use <b>bold</b> and </thin k>.",
        "Yes",
    ),
    ("leading-whitespace", False, "\n\n<think>x</think>y", "x", "y"),
]


def run(parser: ThinkReasoningParser, chunks: list[str]) -> tuple[str | None, str]:
    events = [e for chunk in chunks for e in parser.feed(chunk)] + parser.finish()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    return reasoning or None, "".join(e.text for e in events if isinstance(e, ContentDelta))


def random_chunks(text: str, seed: int) -> list[str]:
    rng, chunks, pos = random.Random(seed), [], 0
    while pos < len(text):
        size = rng.randint(1, 9)
        chunks.append(text[pos : pos + size])
        pos += size
    return chunks


@pytest.mark.parametrize(
    ("opened", "output", "reasoning", "content"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_parse_and_stream_give_the_table_answer(opened: bool, output: str, reasoning: str | None, content: str) -> None:
    assert ThinkReasoningParser(in_reasoning=opened).parse(output) == (reasoning, content)
    assert run(ThinkReasoningParser(in_reasoning=opened), list(output)) == (reasoning, content)
    for seed in range(5):
        assert run(ThinkReasoningParser(in_reasoning=opened), random_chunks(output, seed)) == (
            reasoning,
            content,
        )


def test_thinking_streams_as_it_is_written() -> None:
    parser = ThinkReasoningParser()
    assert parser.feed("<think>\nAbc") == [ReasoningDelta("Abc")]
    assert parser.feed(" def</th") == [ReasoningDelta(" def")]  # only "</th" waits
    assert parser.feed("ink>\n\nHi") == [ContentDelta("Hi")]
    assert parser.feed(" there") == [ContentDelta(" there")]
    assert parser.finish() == []


def test_a_tool_call_opened_inside_the_thinking_ends_it() -> None:
    # vLLM tests/reasoning/test_qwen3_reasoning_parser.py (TOOL_CALL_NO_THINK_END): Qwen3.5 calls a tool
    # without closing its thinking; the tool parser's opener ends the reasoning and stays in the content
    output = "I need to read the file.\n\n" + TOOL_CALL_BODY
    parser = ThinkReasoningParser(in_reasoning=True)
    parser.implicit_ends = ("<tool_call>",)
    assert parser.parse(output) == ("I need to read the file.", TOOL_CALL_BODY)
    assert run(parser, list(output)) == ("I need to read the file.", TOOL_CALL_BODY)


@pytest.mark.parametrize(
    ("prompt", "opens"),
    [
        ("<｜User｜>What is 2+2?<｜Assistant｜><think>\n", True),  # DeepSeek-R1 template
        ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", False),  # Qwen3, thinking on
        ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),  # Qwen3, enable_thinking=False
        ("<|im_start|>assistant\n<think>\n", True),  # Qwen3-Thinking-2507 templates
        ("<|im_start|>system\nThink inside <think> tags.<|im_end|>\n<|im_start|>assistant\n", False),
    ],
)
def test_prompt_opens_reasoning(prompt: str, opens: bool) -> None:
    assert ThinkReasoningParser.prompt_opens_reasoning(prompt) is opens


def test_registry_and_detection() -> None:
    assert get_reasoning_parser("think") is ThinkReasoningParser
    assert get_reasoning_parser("harmony") is HarmonyReasoningParser
    assert set(REASONING_PARSERS) == {"think", "harmony"}
    with pytest.raises(UnknownParserError, match="think"):
        get_reasoning_parser("deepseek")
    qwen3_vocab = {"<think>", "</think>", "<tool_call>", "</tool_call>"}
    assert detect_reasoning_parser("{{ '<think>\\n' }}", qwen3_vocab) == "think"
    assert detect_reasoning_parser(None, {"<|channel|>", "<|message|>"}) == "harmony"
    assert detect_reasoning_parser("{{ messages }}", {"hello"}) is None


HARMONY_CALL = (
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
    '{"location":"SF"}<|call|>'
)
# openai/harmony docs/format.md ("Reasoning", "Receiving tool calls"); without tools a call is only text
HARMONY = [
    (
        "final",
        '<|channel|>analysis<|message|>User asks: "What is 2 + 2?" Simple arithmetic.<|end|>'
        "<|start|>assistant<|channel|>final<|message|>2 + 2 = 4.<|return|>",
        'User asks: "What is 2 + 2?" Simple arithmetic.',
        "2 + 2 = 4.",
    ),
    (
        "call-without-tools",
        "<|channel|>analysis<|message|>Need get_weather.<|end|>" + HARMONY_CALL,
        "Need get_weather.",
        HARMONY_CALL,
    ),
]


@pytest.mark.parametrize(("output", "reasoning", "content"), [h[1:] for h in HARMONY], ids=[h[0] for h in HARMONY])
def test_harmony_reasoning_without_tools(output: str, reasoning: str, content: str) -> None:
    assert HarmonyReasoningParser().parse(output) == (reasoning, content)
    parser = HarmonyReasoningParser()
    events = [e for chunk in random_chunks(output, 3) for e in parser.feed(chunk)] + parser.finish()
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == reasoning
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == content
    assert HarmonyReasoningParser.prompt_opens_reasoning("<|start|>assistant") is False
