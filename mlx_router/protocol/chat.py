"""`/v1/chat/completions` wire types."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from mlx_router.conversation.model import (
    Conversation,
    FilePart,
    FunctionTool,
    ImagePart,
    Message,
    Part,
    SamplingOptions,
    TextPart,
    ToolCall,
    ToolChoice,
)
from mlx_router.errors import InvalidRequestError
from mlx_router.protocol.common import (
    ChoiceLogprobs,
    FinishReason,
    JSONObject,
    OpenAIModel,
    SamplingFields,
    Usage,
)

# Arguments the server itself passes to chat templates: a request may not set them (nor the names transformers'
# apply_chat_template takes for itself). serving/templates.py's RESERVED_TEMPLATE_KWARGS is the same set.
RESERVED_TEMPLATE_KWARGS = frozenset(
    {
        "messages",
        "conversation",
        "tools",
        "documents",
        "add_generation_prompt",
        "continue_final_message",
        "tokenize",
        "return_dict",
        "return_tensors",
        "return_assistant_tokens_mask",
        "chat_template",
        "padding",
        "truncation",
        "max_length",
        "tokenizer_kwargs",
        "processor_kwargs",
        "bos_token",
        "eos_token",
        "pad_token",
        "unk_token",
    }
)

ContentPartType = Literal["text", "image_url", "input_image", "file", "input_audio", "refusal"]


class ContentPart(OpenAIModel):
    """One part of a message's content list."""

    type: ContentPartType
    text: str | None = None
    image_url: Any = None
    file: Any = None


class FunctionCallIn(OpenAIModel):
    name: str
    arguments: str | JSONObject = "{}"


class ToolCallIn(OpenAIModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessage(OpenAIModel):
    """A message of the conversation, as clients send it."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None

    def text(self) -> str | None:
        """The content as one string (text parts joined), or None."""
        if self.content is None or isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")

    def has_media(self) -> bool:
        return isinstance(self.content, list) and any(p.type != "text" for p in self.content)


class FunctionDef(OpenAIModel):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: JSONObject | None = None
    strict: bool | None = None


class ToolDef(OpenAIModel):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(OpenAIModel):
    name: str


class NamedToolChoice(OpenAIModel):
    type: Literal["function"] = "function"
    function: NamedFunction


class JSONSchemaFormat(OpenAIModel):
    name: str = "response"
    description: str | None = None
    schema_: JSONObject | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionRequest(SamplingFields):
    """The body of `POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None

    @field_validator("response_format")
    @classmethod
    def _schema_given(cls, v: ResponseFormat | None) -> ResponseFormat | None:
        if v is not None and v.type == "json_schema" and (v.json_schema is None or v.json_schema.schema_ is None):
            raise ValueError("json_schema.schema is required when type is json_schema")
        return v

    @field_validator("chat_template_kwargs")
    @classmethod
    def _kwargs_not_reserved(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        reserved = sorted(set(v or ()) & RESERVED_TEMPLATE_KWARGS)
        if reserved:
            raise ValueError(f"may not set {', '.join(reserved)}: the server sets them")
        return v

    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def to_conversation(self) -> Conversation:
        """This request in the serving core's terms (developer is system; parts typed)."""
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice):
            tool_choice = ToolChoice("named", choice.function.name)
        else:
            tool_choice = ToolChoice(choice or "auto")
        kwargs = dict(self.chat_template_kwargs or {})
        return Conversation(
            model=self.model,
            messages=[_message(m, i) for i, m in enumerate(self.messages)],
            tools=[
                FunctionTool(t.function.name, t.function.description, t.function.parameters, t.function.strict)
                for t in self.tools or ()
            ],
            tool_choice=tool_choice,
            parallel_tool_calls=self.parallel_tool_calls is not False,
            response_format=None
            if self.response_format is None
            else self.response_format.model_dump(by_alias=True, exclude_none=True),
            max_tokens=self.output_limit(),
            sampling=SamplingOptions(
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                min_p=self.min_p,
                repetition_penalty=self.repetition_penalty,
                presence_penalty=self.presence_penalty,
                frequency_penalty=self.frequency_penalty,
                logit_bias=self.logit_bias,
                seed=self.seed,
            ),
            stop=self.stop_list(),
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            ignore_eos=self.ignore_eos,
            reasoning_effort=self.reasoning_effort,
            template_kwargs=kwargs,
        )


def _message(m: ChatMessage, index: int) -> Message:
    content: list[Part] | None
    if m.content is None:
        content = None
    elif isinstance(m.content, str):
        content = [TextPart(m.content)]
    else:
        content = [_part(p, f"messages.{index}.content") for p in m.content]
    return Message(
        role="system" if m.role == "developer" else m.role,  # OpenAI's newer name; templates know only "system"
        content=content,
        name=m.name,
        tool_calls=[
            ToolCall(tc.id or f"call_{i}", tc.function.name, _arguments(tc.function.arguments))
            for i, tc in enumerate(m.tool_calls or ())
        ],
        tool_call_id=m.tool_call_id,
        reasoning=m.reasoning_content,
    )


def _arguments(args: str | dict[str, Any]) -> str:
    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


def _part(part: ContentPart, param: str) -> Part:
    if part.type == "text":
        return TextPart(part.text or "")
    if part.type in ("image_url", "input_image"):
        value = part.image_url
        if isinstance(value, str):
            return ImagePart(value)
        if isinstance(value, dict) and isinstance(value.get("url"), str):
            detail = value.get("detail")
            return ImagePart(value["url"], detail if isinstance(detail, str) else None)
        raise InvalidRequestError("an image part needs image_url.url (a data: URI)", param=param)
    if part.type == "file":
        value = part.file
        if isinstance(value, dict) and isinstance(value.get("file_data"), str):
            name = value.get("filename")
            return FilePart(value["file_data"], name if isinstance(name, str) else None)
        if isinstance(value, dict) and value.get("file_id") is not None:
            raise InvalidRequestError("file_id is not supported: send the file inline as file.file_data", param=param)
        raise InvalidRequestError("a file part needs file.file_data (a data: URI)", param=param)
    raise InvalidRequestError(f"content parts of type {part.type!r} are not supported", param=param)


class ToolCallFunctionOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunctionOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ToolCallFunctionDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallFunctionDelta


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ChunkTemplate:
    """The JSON of a chat chunk that carries only text (`content` or `reasoning_content`), written without
    building its models: every token of a stream is such a chunk, and building and dumping three pydantic
    models for each cost more than the rest of the chunk's way to the socket. The output is exactly the JSON
    that dumping the equivalent `ChatCompletionChunk` without nulls (finish_reason null kept) gives."""

    def __init__(self, chunk_id: str, created: int, model: str) -> None:
        head = json.dumps(
            {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        self._head = head[:-1] + ',"choices":[{"index":0,"delta":{"'
        self._tail = '},"finish_reason":null}]}'

    def text(self, field: Literal["content", "reasoning_content"], text: str) -> str:
        return f'{self._head}{field}":{json.dumps(text, ensure_ascii=False)}{self._tail}'
