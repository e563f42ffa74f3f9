"""A conversation as the serving core sees it, whatever API it came through.

Chat Completions, Anthropic Messages and OpenAI Responses each convert their request into a `Conversation`
(their protocol module's `to_conversation`); from there one preparer (`serving/prepare.py`) renders, encodes and
checks it, and one service (`serving/generation.py`) runs it into API-neutral events. Roles are the four chat
templates know: an API's other names (OpenAI's `developer`) are mapped by its converter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image given inline (a `data:` URI), or a URL the server's media settings may allow fetching."""

    url: str
    detail: str | None = None  # "low": a small view of it (OpenAI's `detail`)


@dataclass(frozen=True)
class FilePart:
    """A document given inline (`data:application/pdf;base64,...`)."""

    data: str
    filename: str | None = None


Part = Union[TextPart, ImagePart, FilePart]  # noqa: UP007 (a runtime alias)


@dataclass(frozen=True)
class ToolCall:
    """A call the assistant made: `arguments` is JSON text (a function tool's) or the raw input (a custom tool's)."""

    id: str
    name: str
    arguments: str


@dataclass
class Message:
    """One turn. `content` None: nothing but tool calls (an assistant turn), or an empty message."""

    role: Role
    content: list[Part] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # a tool result: the call it answers
    reasoning: str | None = None  # an assistant turn's thinking, sent back by the client

    def text(self) -> str | None:
        """The text parts joined (nothing between them: `normalize.join_text`), or None without content."""
        if self.content is None:
            return None
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def has_media(self) -> bool:
        return self.content is not None and any(not isinstance(p, TextPart) for p in self.content)


@dataclass(frozen=True)
class FunctionTool:
    """A tool whose input is a JSON object following `parameters`."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(frozen=True)
class CustomTool:
    """A freeform tool (Responses' `custom`, e.g. Codex's `apply_patch`): its input is raw text, optionally
    following a grammar (`syntax` "lark" or "regex"). Templates see it as a function of one string `input`."""

    name: str
    description: str | None = None
    syntax: Literal["lark", "regex"] | None = None
    definition: str | None = None


Tool = Union[FunctionTool, CustomTool]  # noqa: UP007


@dataclass(frozen=True)
class ToolChoice:
    mode: Literal["auto", "required", "none", "named"] = "auto"
    name: str | None = None  # mode "named": the tool that must be called


@dataclass(frozen=True)
class SamplingOptions:
    """What the request says about sampling; None: the model's config entry, then the server's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    seed: int | None = None


@dataclass
class Conversation:
    """A request to continue a conversation, in the serving core's terms."""

    model: str
    messages: list[Message]
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None  # OpenAI's shape: {"type": "json_schema", "json_schema": {...}}
    max_tokens: int | None = None
    # "refuse": a max_tokens past the context's room is a 400 (OpenAI); "cap": it is cut to the room (Anthropic:
    # Claude Code always asks for 32000)
    max_tokens_policy: Literal["refuse", "cap"] = "refuse"
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # None: none; 0: the chosen token's; k: plus the top k
    ignore_eos: bool = False
    reasoning_effort: str | None = None
    thinking: bool | None = None  # the request turns thinking on or off (templates' enable_thinking); None: default
    thinking_budget: int | None = None  # at most this many tokens of thinking, then the answer (Anthropic's budget)
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    param_prefix: str = "messages"  # where the API's messages are, for error `param`s ("input" for Responses)

    def custom_tool(self, name: str) -> CustomTool | None:
        for tool in self.tools:
            if isinstance(tool, CustomTool) and tool.name == name:
                return tool
        return None
