"""`/v1/messages` and `/v1/messages/count_tokens` wire types, with Anthropic's field names.

A request converts itself into the serving core's `Conversation` (`to_conversation`). Claude Code's habits are
kept as the prefix cache needs them: its system text inside `messages` stays where it is, and the per-request
billing line it writes at the top of the system prompt (`x-anthropic-billing-header: ...; cch=<hash>;`, a new
hash every request) is dropped, so that the prompt starts the same every turn.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlx_router.conversation.model import (
    Conversation,
    FunctionTool,
    Message,
    Part,
    SamplingOptions,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from mlx_router.protocol.anthropic_blocks import (
    CacheControlled,
    ContentBlock,
    DocumentBlock,
    ImageBlock,
    SearchResultBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    block_parts,
    result_parts,
)
from mlx_router.protocol.common import MAX_STOP_SEQUENCES, JSONObject, OpenAIModel, RequestBody

logger = logging.getLogger(__name__)

BILLING_LINE_PREFIX = "x-anthropic-billing-header:"


class MessageParam(OpenAIModel):
    # "system": Claude Code (2.1.154 on) writes system text inside the conversation; it stays where it is
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]

    @model_validator(mode="after")
    def _blocks_fit_the_role(self) -> MessageParam:
        if isinstance(self.content, str):
            return self
        allowed = _ROLE_BLOCKS[self.role]
        for block in self.content:
            if block.type not in allowed:
                raise ValueError(f"a {self.role} message may not hold a {block.type} block")
        return self


_ROLE_BLOCKS = {
    "system": {"text"},
    "user": {"text", "image", "document", "search_result", "tool_result"},
    "assistant": {"text", "image", "document", "tool_use", "thinking", "redacted_thinking"},
}


class ToolParam(CacheControlled):
    """A client tool. Anthropic's server tools (`web_search_...`, `code_execution_...`) have a `type` of their own
    and no `input_schema`: the server runs none of them, so they are left out with a log line."""

    type: str | None = None
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: JSONObject | None = None
    strict: bool | None = None


class ToolChoiceParam(OpenAIModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoiceParam:
        if self.type == "tool" and not self.name:
            raise ValueError("a tool_choice of type tool needs the tool's name")
        return self


class ThinkingParam(OpenAIModel):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=1)


class Metadata(OpenAIModel):
    user_id: str | None = None


class JSONOutputFormat(OpenAIModel):
    type: Literal["json_schema"]
    schema_: JSONObject = Field(alias="schema")


class OutputConfig(OpenAIModel):
    """Structured output (`format`: the answer parses and matches the schema, through the constrained decoder)
    and `effort` (a template's reasoning_effort: gpt-oss reads it; xhigh and max are its high)."""

    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JSONOutputFormat | None = None


class MessagesInput(RequestBody):
    """What a Messages request and a count_tokens request have in common: the prompt."""

    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingParam | None = None

    def to_conversation(self, model: str | None = None) -> Conversation:
        """The core's conversation; `model`: the local model an alias resolved to (default: `self.model`)."""
        messages: list[Message] = []
        system = system_parts(self.system)
        if system:
            messages.append(Message(role="system", content=system))
        for m in self.messages:
            messages.extend(convert_message(m))
        choice = self.tool_choice
        return Conversation(
            model=model or self.model,
            messages=messages,
            tools=client_tools(self.tools),
            tool_choice=tool_choice(choice),
            parallel_tool_calls=not (choice is not None and choice.disable_parallel_tool_use),
            thinking=thinking_switch(self.thinking),
            thinking_budget=self.thinking.budget_tokens
            if self.thinking is not None and self.thinking.type == "enabled"
            else None,
            param_prefix="messages",
        )


class MessagesRequest(MessagesInput):
    """The body of `POST /v1/messages`."""

    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)  # 0: greedy
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stream: bool | None = None
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    output_format: JSONOutputFormat | None = None  # the structured-outputs beta's name of output_config.format

    @field_validator("stop_sequences")
    @classmethod
    def _stop_count(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(v) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are supported")
        return v

    def to_conversation(self, model: str | None = None) -> Conversation:
        conv = super().to_conversation(model)
        conv.max_tokens = self.max_tokens
        # Claude Code always asks for 32000: cut to the room the context leaves, never refused
        conv.max_tokens_policy = "cap"
        conv.sampling = SamplingOptions(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        conv.stop = [s for s in self.stop_sequences or [] if s]
        config = self.output_config or OutputConfig()
        fmt = config.format or self.output_format
        if fmt is not None:
            conv.response_format = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.schema_}}
        if config.effort is not None:
            conv.reasoning_effort = {"xhigh": "high", "max": "high"}.get(config.effort, config.effort)
        return conv


class CountTokensRequest(MessagesInput):
    """The body of `POST /v1/messages/count_tokens`."""


def strip_billing_line(text: str) -> str:
    """`text` without Claude Code's billing line at its top (the line and its line break)."""
    if not text.startswith(BILLING_LINE_PREFIX):
        return text
    end = text.find("\n")
    return "" if end < 0 else text[end + 1 :]


def system_parts(system: str | list[TextBlock] | None) -> list[Part]:
    """The system prompt's text parts, the billing line left out (a block holding only it goes whole)."""
    if system is None:
        return []
    texts = [system] if isinstance(system, str) else [b.text for b in system]
    return [TextPart(t) for t in (strip_billing_line(t) for t in texts) if t]


def convert_message(m: MessageParam) -> list[Message]:
    """One Anthropic message as the core's messages: a user turn's tool results become tool messages (first, as
    Anthropic requires them to come first), its other blocks one user message after them."""
    if m.role == "system":
        system = m.content if isinstance(m.content, str) else [b for b in m.content if isinstance(b, TextBlock)]
        return [Message(role="system", content=system_parts(system))]
    if isinstance(m.content, str):
        return [Message(role=m.role, content=[TextPart(m.content)])]
    if m.role == "assistant":
        return [_assistant(m.content)]
    out: list[Message] = []
    parts: list[Part] = []
    for block in m.content:
        if isinstance(block, ToolResultBlock):
            out.append(Message(role="tool", content=result_parts(block), tool_call_id=block.tool_use_id))
        elif isinstance(block, TextBlock | ImageBlock | DocumentBlock | SearchResultBlock):
            parts.extend(block_parts(block))
    if parts or not out:
        out.append(Message(role="user", content=parts))
    return out


def _assistant(blocks: list[Any]) -> Message:
    parts: list[Part] = []
    calls: list[ToolCall] = []
    thinking: list[str] = []
    for block in blocks:
        if isinstance(block, ToolUseBlock):
            calls.append(ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False)))
        elif isinstance(block, ThinkingBlock):
            thinking.append(block.thinking)
        elif isinstance(block, TextBlock | ImageBlock | DocumentBlock):
            parts.extend(block_parts(block))
    return Message(
        role="assistant",
        content=parts or None,
        tool_calls=calls,
        reasoning="".join(thinking) or None,
    )


def fold_inner_system(conv: Conversation) -> Conversation | None:
    """For a template that refuses system messages past the first (Gemma's wants user and assistant to
    alternate): `conv` with each such message's text moved into the user message next to it, in the same
    place, wrapped as Claude Code wraps its own reminders; None when there is none to move."""
    messages = conv.messages
    inner = [i for i, m in enumerate(messages) if m.role == "system" and i > 0]
    if not inner:
        return None
    out = list(messages)
    for i in reversed(inner):
        text: list[Part] = [TextPart(f"<system-reminder>\n{out[i].text() or ''}\n</system-reminder>\n")]
        after, before = i + 1, i - 1
        if after < len(out) and out[after].role == "user":
            out[after] = replace(out[after], content=text + list(out[after].content or []))
        elif before >= 0 and out[before].role == "user":
            out[before] = replace(out[before], content=list(out[before].content or []) + text)
        else:
            out[i] = Message(role="user", content=text)
            continue
        del out[i]
    return replace(conv, messages=out)


def client_tools(tools: list[ToolParam] | None) -> list[Tool]:
    out: list[Tool] = []
    for t in tools or []:
        if t.type not in (None, "custom") or t.input_schema is None:
            logger.info("tool %r of type %s left out: the server runs no server tools", t.name, t.type)
            continue
        out.append(FunctionTool(t.name, t.description, t.input_schema, t.strict))
    return out


_CHOICE_MODES: dict[str, Literal["auto", "required", "none", "named"]] = {
    "auto": "auto",
    "any": "required",
    "none": "none",
    "tool": "named",
}


def tool_choice(choice: ToolChoiceParam | None) -> ToolChoice:
    if choice is None:
        return ToolChoice()
    return ToolChoice(_CHOICE_MODES[choice.type], choice.name if choice.type == "tool" else None)


def thinking_switch(thinking: ThinkingParam | None) -> bool | None:
    """enabled: the template's thinking on; disabled: off; adaptive or absent: the model's default. (An enabled
    budget becomes the conversation's `thinking_budget`.)"""
    if thinking is None or thinking.type == "adaptive":
        return None
    return thinking.type == "enabled"
