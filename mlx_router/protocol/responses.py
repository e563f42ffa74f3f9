"""`POST /v1/responses` request wire types (OpenAI's names), and their conversion into a `Conversation`.

The server is stateless: a request carries its whole history in `input` (Codex resends it every turn), or
names an earlier response with `previous_response_id` (the bounded store in `serving/response_store.py`).
Hosted tools (`web_search`, `file_search`, `computer`, `mcp`, ...) are skipped with a log line: a client that
offers them everywhere still gets its answer. Input items are `protocol/responses_input.py`, the output side
`protocol/responses_output.py`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator

from mlx_router.conversation.model import (
    Conversation,
    CustomTool,
    FunctionTool,
    Message,
    SamplingOptions,
    TextPart,
    Tool,
    ToolChoice,
)
from mlx_router.errors import InvalidRequestError
from mlx_router.protocol.common import JSONObject, OpenAIModel, RequestBody
from mlx_router.protocol.responses_input import InputItem, items_to_messages

logger = logging.getLogger(__name__)

LOGPROBS = "message.output_text.logprobs"  # the `include` value that asks for the output text's logprobs


class FunctionToolParam(OpenAIModel):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: JSONObject | None = None
    strict: bool | None = None


class CustomToolFormat(OpenAIModel):
    """`{"type": "text"}` (free text) or `{"type": "grammar", "syntax": "lark"|"regex", "definition": ...}`."""

    type: Literal["text", "grammar"]
    syntax: Literal["lark", "regex"] | None = None
    definition: str | None = None


class CustomToolParam(OpenAIModel):
    type: Literal["custom"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    format: CustomToolFormat | None = None

    @field_validator("format")
    @classmethod
    def _grammar_complete(cls, v: CustomToolFormat | None) -> CustomToolFormat | None:
        if v is not None and v.type == "grammar" and (v.syntax is None or not v.definition):
            raise ValueError("a grammar format needs syntax ('lark' or 'regex') and a definition")
        return v


class HostedToolParam(OpenAIModel):
    """A tool OpenAI runs itself (web_search, file_search, computer, local_shell, mcp, ...): kept whole, to be
    echoed in the Response, and skipped."""

    model_config = ConfigDict(extra="allow")
    type: str


def _tool_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("function", "custom") else "hosted"


ToolParam = Annotated[
    Union[  # noqa: UP007
        Annotated[FunctionToolParam, Tag("function")],
        Annotated[CustomToolParam, Tag("custom")],
        Annotated[HostedToolParam, Tag("hosted")],
    ],
    Discriminator(_tool_kind),
]


class NamedToolChoiceParam(OpenAIModel):
    """`{"type": "function"|"custom", "name": ...}`; another type names a hosted tool, which is refused."""

    type: str
    name: str | None = None


class ReasoningParam(OpenAIModel):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: str | None = None


class TextFormatParam(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: JSONObject | None = Field(None, alias="schema")
    strict: bool | None = None


class TextParam(OpenAIModel):
    format: TextFormatParam | None = None
    verbosity: str | None = None


class ResponsesRequest(RequestBody):
    """The body of `POST /v1/responses`."""

    model: str = Field(min_length=1)
    input: list[InputItem]  # a string is one user message (see `_text_input`)
    instructions: str | list[InputItem] | None = None  # a list: messages (system or developer) put first
    tools: list[ToolParam] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoiceParam | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    reasoning: ReasoningParam | None = None
    text: TextParam | None = None
    stream: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    metadata: dict[str, str] | None = None
    prompt_cache_key: str | None = None
    user: str | None = None
    background: bool | None = None
    conversation: Any = None

    @field_validator("input", mode="before")
    @classmethod
    def _text_input(cls, v: Any) -> Any:
        # a list-only field, so a bad item's error names the item, not "input.str"
        return [{"type": "message", "role": "user", "content": v}] if isinstance(v, str) else v

    @field_validator("background")
    @classmethod
    def _not_background(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("background responses are not supported: this server answers while you wait")
        return v

    @field_validator("conversation")
    @classmethod
    def _no_conversation(cls, v: Any) -> Any:
        if v is not None:
            raise ValueError("conversations are not stored by this server: send the history in input")
        return v

    def input_items(self) -> list[Any]:
        """`input` as a list of items (a string came as one user message)."""
        return list(self.input)

    def response_format(self) -> dict[str, Any] | None:
        """`text.format` in Chat Completions' `response_format` shape (what the core's grammars read)."""
        fmt = self.text.format if self.text is not None else None
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return {"type": "json_object"}
        if fmt.schema_ is None:
            raise InvalidRequestError("text.format.schema is required when type is json_schema", param="text.format")
        spec: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.schema_}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        return {"type": "json_schema", "json_schema": spec}

    def to_conversation(self, history: list[Any] | None = None) -> Conversation:
        """The request in the core's terms. `history`: the items of the response `previous_response_id` names
        (its input and output), which come before this request's input."""
        messages: list[Message] = []
        if isinstance(self.instructions, str) and self.instructions:
            messages.append(Message(role="system", content=[TextPart(self.instructions)]))
        elif isinstance(self.instructions, list):
            messages += items_to_messages(self.instructions, "instructions")
        messages += items_to_messages([*(history or []), *self.input_items()], "input", -len(history or []))
        effort = self.reasoning.effort if self.reasoning is not None else None
        return Conversation(
            model=self.model,
            messages=messages,
            tools=self._tools(),
            tool_choice=self._tool_choice(),
            parallel_tool_calls=self.parallel_tool_calls is not False,
            response_format=self.response_format(),
            max_tokens=self.max_output_tokens,
            # agents (Codex, the Agents SDK) run long contexts: a limit past the context's room is cut to the
            # room, and the answer then ends `incomplete`, as it does at max_output_tokens
            max_tokens_policy="cap",
            sampling=SamplingOptions(temperature=self.temperature, top_p=self.top_p),
            reasoning_effort=None if effort in (None, "none") else effort,
            thinking=False if effort == "none" else None,
            logprobs=(self.top_logprobs or 0) if LOGPROBS in (self.include or []) else None,
            param_prefix="input",
        )

    def _tools(self) -> list[Tool]:
        tools: list[Tool] = []
        skipped = [t.type for t in self.tools or [] if isinstance(t, HostedToolParam)]
        if skipped:
            logger.info("responses: tools skipped (hosted tools this server does not run): %s", ", ".join(skipped))
        for tool in self.tools or []:
            if isinstance(tool, FunctionToolParam):
                tools.append(FunctionTool(tool.name, tool.description, tool.parameters, tool.strict))
            elif isinstance(tool, CustomToolParam):
                fmt = tool.format
                grammar = fmt is not None and fmt.type == "grammar"
                tools.append(
                    CustomTool(
                        tool.name,
                        tool.description,
                        syntax=fmt.syntax if grammar and fmt is not None else None,
                        definition=fmt.definition if grammar and fmt is not None else None,
                    )
                )
        return tools

    def _tool_choice(self) -> ToolChoice:
        choice = self.tool_choice
        if choice is None:
            return ToolChoice()
        if isinstance(choice, str):
            return ToolChoice(mode=choice)
        if choice.type not in ("function", "custom") or not choice.name:
            raise InvalidRequestError(
                f"tool_choice of type {choice.type!r} is not supported: name a function or custom tool, "
                "or use 'auto', 'required' or 'none'",
                param="tool_choice",
            )
        return ToolChoice(mode="named", name=choice.name)
