"""Anthropic Messages content blocks (Anthropic's field names) and the core's message parts they become: text
as text, images and PDF documents as `data:` URIs (a URL image is left to the server's media settings), a
search result or a tool search's answer as text."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from mlx_router.conversation.model import FilePart, ImagePart, Part, TextPart
from mlx_router.protocol.common import JSONObject, OpenAIModel


class CacheControlled(OpenAIModel):
    """Blocks may carry `cache_control` (Anthropic's cache breakpoints): accepted; the prefix cache needs none."""

    cache_control: JSONObject | None = None


class TextBlock(CacheControlled):
    type: Literal["text"]
    text: str


class Base64Source(OpenAIModel):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(OpenAIModel):
    type: Literal["url"]
    url: str


class PlainTextSource(OpenAIModel):
    type: Literal["text"]
    media_type: str = "text/plain"
    data: str


class ContentSource(OpenAIModel):
    type: Literal["content"]
    content: str | list[TextBlock]


class ImageBlock(CacheControlled):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]


class DocumentBlock(CacheControlled):
    type: Literal["document"]
    source: Annotated[Base64Source | URLSource | PlainTextSource | ContentSource, Field(discriminator="type")]
    title: str | None = None
    context: str | None = None

    @model_validator(mode="after")
    def _servable(self) -> DocumentBlock:
        src = self.source
        if isinstance(src, Base64Source) and src.media_type != "application/pdf":
            raise ValueError(f"a base64 document must be application/pdf, not {src.media_type}")
        if isinstance(src, URLSource):
            raise ValueError("a document given by URL is not fetched: send the PDF as a base64 source")
        return self


class ToolUseBlock(CacheControlled):
    type: Literal["tool_use"]
    id: str
    name: str
    input: JSONObject = Field(default_factory=dict)


class SearchResultBlock(CacheControlled):
    """A search result a client tool found (its text goes to the model with its title and source)."""

    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]


class ToolReferenceBlock(OpenAIModel):
    """A tool search's answer: the tool it made available (every tool is offered here already)."""

    type: Literal["tool_reference"]
    tool_name: str


class ToolResultBlock(CacheControlled):
    type: Literal["tool_result"]
    tool_use_id: str
    content: (
        str
        | list[
            Annotated[
                TextBlock | ImageBlock | DocumentBlock | SearchResultBlock | ToolReferenceBlock,
                Field(discriminator="type"),
            ]
        ]
    ) = ""
    # Accepted: the result's text says what failed (Claude Code writes <tool_use_error>...), and it goes to the
    # model as it is.
    is_error: bool | None = None


class ThinkingBlock(OpenAIModel):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(OpenAIModel):
    """Thinking only Anthropic can read (its `data` is encrypted): nothing of it reaches the model."""

    type: Literal["redacted_thinking"]
    data: str = ""


ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | SearchResultBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock,
    Field(discriminator="type"),
]


def block_parts(block: TextBlock | ImageBlock | DocumentBlock | SearchResultBlock | ToolReferenceBlock) -> list[Part]:
    if isinstance(block, TextBlock):
        return [TextPart(block.text)]
    if isinstance(block, SearchResultBlock):
        return [TextPart(f"{block.title}\n{block.source}\n"), *(TextPart(b.text) for b in block.content)]
    if isinstance(block, ToolReferenceBlock):
        return [TextPart(f"Tool available: {block.tool_name}\n")]
    if isinstance(block, ImageBlock):
        src = block.source
        url = f"data:{src.media_type};base64,{src.data}" if isinstance(src, Base64Source) else src.url
        return [ImagePart(url)]
    return document_parts(block)


def document_parts(block: DocumentBlock) -> list[Part]:
    src = block.source
    if isinstance(src, Base64Source):
        return [FilePart(f"data:application/pdf;base64,{src.data}", filename=block.title)]
    if isinstance(src, URLSource):  # refused by the block's validator
        raise AssertionError("document URL")
    if isinstance(src, PlainTextSource):
        return [TextPart(src.data)]
    content = src.content
    return [TextPart(content)] if isinstance(content, str) else [TextPart(b.text) for b in content]


def result_parts(block: ToolResultBlock) -> list[Part]:
    if isinstance(block.content, str):
        return [TextPart(block.content)]
    parts: list[Part] = []
    for b in block.content:
        parts.extend(block_parts(b))
    return parts
