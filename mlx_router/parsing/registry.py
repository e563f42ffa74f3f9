"""Names of the tool-call and reasoning formats, and the classes behind them (imported on first use).

Config files name a format (`"tool_parser": "hermes"`); an unknown name fails start-up with the list of
valid ones. Without a name, `detect_*` picks one from the model's chat template and vocabulary.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping
from types import MappingProxyType

from mlx_router.parsing.reasoning.base import ReasoningParser
from mlx_router.parsing.tools.base import ToolCallParser

_TOOLS = "mlx_router.parsing.tools"

# Detection tries these in order: formats whose markers are more specific come first (Qwen3-Coder also uses
# `<tool_call>`, so it must be tried before hermes; llama3_json's bare JSON is the least specific).
TOOL_PARSERS: Mapping[str, str] = MappingProxyType(
    {
        "harmony": f"{_TOOLS}.harmony:HarmonyToolParser",
        "deepseek_v3": f"{_TOOLS}.deepseek_v3:DeepSeekV3ToolParser",
        "mistral": f"{_TOOLS}.mistral:MistralToolParser",
        "qwen3_coder": f"{_TOOLS}.qwen3_coder:Qwen3CoderToolParser",
        "hermes": f"{_TOOLS}.hermes:HermesToolParser",
        "llama3_json": f"{_TOOLS}.llama3_json:Llama3JsonToolParser",
    }
)

# harmony comes first: its models have no `<think>`, but a vocabulary test should not depend on that.
REASONING_PARSERS: Mapping[str, str] = MappingProxyType(
    {
        "harmony": "mlx_router.parsing.reasoning.harmony:HarmonyReasoningParser",
        "think": "mlx_router.parsing.reasoning.think:ThinkReasoningParser",
    }
)


class UnknownParserError(ValueError):
    """A parser name that is not registered; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: Collection[str]) -> None:
        super().__init__(f"unknown {kind} parser {name!r}; valid names: {', '.join(sorted(valid))}")
        self.name = name
        self.valid = sorted(valid)


def _load(spec: str) -> type:
    module, _, attribute = spec.partition(":")
    loaded: type = getattr(importlib.import_module(module), attribute)
    return loaded


def get_tool_parser(name: str) -> type[ToolCallParser]:
    """The tool-call parser class registered as `name`."""
    if name not in TOOL_PARSERS:
        raise UnknownParserError("tool", name, TOOL_PARSERS)
    return _load(TOOL_PARSERS[name])


def get_reasoning_parser(name: str) -> type[ReasoningParser]:
    """The reasoning parser class registered as `name`."""
    if name not in REASONING_PARSERS:
        raise UnknownParserError("reasoning", name, REASONING_PARSERS)
    return _load(REASONING_PARSERS[name])


def detect_tool_parser(chat_template: str | None, vocab: Collection[str]) -> str | None:
    """The first registered tool format that recognizes the template/vocabulary, or None."""
    for name in TOOL_PARSERS:
        if get_tool_parser(name).detect(chat_template, vocab):
            return name
    return None


def detect_reasoning_parser(chat_template: str | None, vocab: Collection[str]) -> str | None:
    """The first registered reasoning format that recognizes the template/vocabulary, or None.

    For harmony models it is "harmony": used when a request offers no tools (with tools, the harmony tool
    parser separates the thinking itself and OutputPipeline drops the reasoning parser).
    """
    for name in REASONING_PARSERS:
        if get_reasoning_parser(name).detect(chat_template, vocab):
            return name
    return None
