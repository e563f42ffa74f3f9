"""`POST /v1/responses` input items (OpenAI's names) and their conversion into the core's chat turns.

A request's `input` (and a stored response's items, `serving/response_store.py`) is a list of these: messages
with text, image and file parts, function and custom tool calls and their outputs, reasoning items. Items of
kinds this server does not run (hosted tools' calls, `item_reference`) are skipped with a log line.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag

from mlx_router.conversation.model import FilePart, ImagePart, Message, Part, TextPart, ToolCall
from mlx_router.errors import InvalidRequestError
from mlx_router.protocol.common import OpenAIModel

logger = logging.getLogger(__name__)


class InputText(OpenAIModel):
    type: Literal["input_text", "output_text", "summary_text", "reasoning_text"]
    text: str


class Refusal(OpenAIModel):
    type: Literal["refusal"]
    refusal: str


class InputImage(OpenAIModel):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] | None = None


class InputFile(OpenAIModel):
    type: Literal["input_file"]
    file_data: str | None = None
    file_id: str | None = None
    file_url: str | None = None
    filename: str | None = None


ContentPart = Annotated[Union[InputText, Refusal, InputImage, InputFile], Field(discriminator="type")]  # noqa: UP007


class MessageItem(OpenAIModel):
    """A message: `type` may be left out (the SDK's "easy" input message)."""

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(OpenAIModel):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(OpenAIModel):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class CustomToolCallItem(OpenAIModel):
    type: Literal["custom_tool_call"]
    call_id: str
    name: str
    input: str
    id: str | None = None
    status: str | None = None


class CustomToolCallOutputItem(OpenAIModel):
    type: Literal["custom_tool_call_output"]
    call_id: str
    output: str | list[ContentPart]
    id: str | None = None


class ReasoningItem(OpenAIModel):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[InputText] = Field(default_factory=list)
    content: list[InputText] | None = None
    encrypted_content: str | None = None


class OtherItem(OpenAIModel):
    """An item of a kind this server does not run (a hosted tool's call, an item_reference): skipped."""

    type: str


def _item_kind(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    return kind if kind in _ITEM_KINDS else "other"


_ITEM_KINDS = (
    "message",
    "function_call",
    "function_call_output",
    "custom_tool_call",
    "custom_tool_call_output",
    "reasoning",
)

InputItem = Annotated[
    Union[  # noqa: UP007
        Annotated[MessageItem, Tag("message")],
        Annotated[FunctionCallItem, Tag("function_call")],
        Annotated[FunctionCallOutputItem, Tag("function_call_output")],
        Annotated[CustomToolCallItem, Tag("custom_tool_call")],
        Annotated[CustomToolCallOutputItem, Tag("custom_tool_call_output")],
        Annotated[ReasoningItem, Tag("reasoning")],
        Annotated[OtherItem, Tag("other")],
    ],
    Discriminator(_item_kind),
]


def items_to_messages(items: list[Any], param: str = "input", first: int = 0) -> list[Message]:
    """Input items as chat turns: calls join the assistant turn before them, a reasoning item goes to the
    assistant turn after it, `developer` is `system`, and a tool's output is a `tool` message. Errors name
    `<param>.<index>`, counted from `first` (the items of a stored response come first, below 0)."""
    messages: list[Message] = []
    reasoning: str | None = None
    for index, item in enumerate(items, start=first):
        where = f"{param}.{index}" if index >= 0 else "previous_response_id"
        if isinstance(item, MessageItem):
            role = "system" if item.role == "developer" else item.role
            message = Message(role=role, content=_parts(item.content, f"{where}.content"))
            if role == "assistant":
                message.reasoning, reasoning = reasoning, None
            messages.append(message)
        elif isinstance(item, FunctionCallItem | CustomToolCallItem):
            arguments = item.arguments if isinstance(item, FunctionCallItem) else item.input
            turn = messages[-1] if messages and messages[-1].role == "assistant" else None
            if turn is None:
                turn = Message(role="assistant", reasoning=reasoning)
                messages.append(turn)
                reasoning = None
            turn.tool_calls.append(ToolCall(item.call_id, item.name, arguments))
        elif isinstance(item, FunctionCallOutputItem | CustomToolCallOutputItem):
            content = _parts(item.output, f"{where}.output")
            messages.append(Message(role="tool", content=content, tool_call_id=item.call_id))
        elif isinstance(item, ReasoningItem):
            texts = [p.text for p in (item.content or [])] or [p.text for p in item.summary]
            reasoning = "\n".join(t for t in texts if t) or None
        else:
            logger.info("responses: input item of type %r skipped (this server does not run it)", item.type)
    return messages


def _parts(content: str | list[Any], param: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[Part] = []
    for index, part in enumerate(content):
        if isinstance(part, InputText):
            parts.append(TextPart(part.text))
        elif isinstance(part, Refusal):
            parts.append(TextPart(part.refusal))
        elif isinstance(part, InputImage):
            if not part.image_url:
                raise InvalidRequestError(
                    "input_image needs an image_url (a data: URI or a URL): uploaded files are not stored here",
                    param=f"{param}.{index}.image_url",
                )
            detail = part.detail if part.detail in ("low", "high") else None
            parts.append(ImagePart(part.image_url, detail))
        else:
            if not part.file_data:
                raise InvalidRequestError(
                    "input_file needs file_data (a data: URI): uploaded or linked files are not fetched",
                    param=f"{param}.{index}.file_data",
                )
            parts.append(FilePart(part.file_data, part.filename))
    return parts
