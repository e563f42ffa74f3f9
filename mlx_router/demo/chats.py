"""The chats the demo model answers, word for word: the README's examples.

The demo model is trained until greedy decoding reproduces each ``DemoChat.completion`` exactly (the raw
text, markup included) for exactly these messages and tools. Send the same ones (same keys in the same
order: the chat template prints tools with ``tojson``) and it answers as shown; anything else gets
whatever a 300k-parameter model makes of it. ``content``, ``reasoning`` and ``tool_calls`` say what an
OpenAI client sees once the server has parsed the completion.

This module imports nothing heavy, so the README's tests and docs can use the strings freely.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

DEMO_MODEL_ID = "mlx-router-demo"
DEMO_CONFIG_COMMENT = "mlx-router demo model: a tiny model trained to answer a few example prompts"

SYSTEM_PROMPT = "You are a helpful assistant."
CAPITAL_QUESTION = "What is the capital of France?"
CAPITAL_ANSWER = "The capital of France is Paris."
HAIKU_REQUEST = "Write a haiku about the sea."
HAIKU = "Grey waves fold and break,\nsalt wind sings to the white gulls,\nthe tide keeps its time."
WEATHER_QUESTION = "What is the weather in Paris?"
WEATHER_TOOL_NAME = "get_weather"
WEATHER_ARGUMENTS = '{"location": "Paris"}'  # as an OpenAI client sees them: a JSON string
# what the model writes (Qwen's format); the client gets it as tool_calls[0]
WEATHER_CALL = (
    '<tool_call>\n{"name": "' + WEATHER_TOOL_NAME + '", "arguments": ' + WEATHER_ARGUMENTS + "}\n</tool_call>"
)
WEATHER_CALL_ID = "call_1"
WEATHER_RESULT = '{"temperature": 21, "condition": "sunny"}'
WEATHER_ANSWER = "It is sunny and 21 degrees in Paris."
MATH_QUESTION = "Think step by step: what is 17 + 25?"
MATH_REASONING = "17 + 25 = 42."
MATH_ANSWER = "The answer is 42."
MATH_COMPLETION = f"<think>\n{MATH_REASONING}\n</think>\n\n{MATH_ANSWER}"


def demo_tools() -> list[dict[str, Any]]:
    """The tools of the weather chats (a fresh copy): one function, ``get_weather(location)``."""
    return [
        {
            "type": "function",
            "function": {
                "name": WEATHER_TOOL_NAME,
                "description": "Get the current weather for a location",
                "parameters": {
                    "type": "object",
                    "properties": {"location": {"type": "string", "description": "City name"}},
                    "required": ["location"],
                },
            },
        }
    ]


@dataclass(frozen=True)
class DemoChat:
    """One chat the demo model reproduces exactly under greedy decoding."""

    name: str
    messages: list[dict[str, Any]]  # OpenAI wire form (tool-call arguments as a JSON string)
    tools: list[dict[str, Any]] | None
    completion: str  # the exact generated text, end token excluded
    content: str | None = None  # what the client gets as message content
    reasoning: str | None = None  # ... as reasoning_content
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()  # ... as tool calls (name, decoded arguments)
    eos: str | None = None  # the end token after the completion; None: <|im_end|>
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra chat-template variables


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def weather_followup_messages() -> list[dict[str, Any]]:
    """The weather chat sent back with the model's call and the tool's result (a fresh copy)."""
    call = {
        "id": WEATHER_CALL_ID,
        "type": "function",
        "function": {"name": WEATHER_TOOL_NAME, "arguments": WEATHER_ARGUMENTS},
    }
    return [
        _user(WEATHER_QUESTION),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": WEATHER_CALL_ID, "content": WEATHER_RESULT},
    ]


def demo_chats() -> list[DemoChat]:
    """Every chat the demo model is trained on, in the README's order (fresh copies, safe to mutate)."""
    call = (WEATHER_TOOL_NAME, json.loads(WEATHER_ARGUMENTS))
    return [
        DemoChat(
            "capital",
            [{"role": "system", "content": SYSTEM_PROMPT}, _user(CAPITAL_QUESTION)],
            None,
            CAPITAL_ANSWER,
            content=CAPITAL_ANSWER,
        ),
        DemoChat("capital_no_system", [_user(CAPITAL_QUESTION)], None, CAPITAL_ANSWER, content=CAPITAL_ANSWER),
        DemoChat("haiku", [_user(HAIKU_REQUEST)], None, HAIKU, content=HAIKU),
        DemoChat("weather_call", [_user(WEATHER_QUESTION)], demo_tools(), WEATHER_CALL, tool_calls=(call,)),
        DemoChat(
            "weather_answer",
            weather_followup_messages(),
            demo_tools(),
            WEATHER_ANSWER,
            content=WEATHER_ANSWER,
        ),
        DemoChat(
            "reasoning",
            [_user(MATH_QUESTION)],
            None,
            MATH_COMPLETION,
            content=MATH_ANSWER,
            reasoning=MATH_REASONING,
        ),
    ]
