"""`/v1/embeddings` wire types, with OpenAI's field names and limits."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from mlx_router.protocol.common import RequestBody

MAX_INPUTS = 2048  # OpenAI's limit on the items of one request

TokenIds = Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]
NonEmptyText = Annotated[StrictStr, Field(min_length=1)]


class EmbeddingRequest(RequestBody):
    """A text, a list of texts, one list of token ids, or a list of them (OpenAI's four forms of `input`)."""

    model: str
    input: NonEmptyText | list[NonEmptyText] | TokenIds | list[TokenIds]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input", mode="wrap")
    @classmethod
    def _one_of_four_forms(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        # one message naming the four forms, not one per member of the union
        if isinstance(value, list) and not value:
            raise ValueError("input must not be an empty list")
        try:
            value = handler(value)
        except ValidationError:
            raise ValueError(
                "input must be a non-empty string, a list of non-empty strings, a non-empty list of token ids "
                "(integers >= 0) or a list of such lists"
            ) from None
        if isinstance(value, list) and isinstance(value[0], (str, list)) and len(value) > MAX_INPUTS:
            raise ValueError(f"input has {len(value)} items; at most {MAX_INPUTS} are allowed per request")
        return value

    def items(self) -> list[str] | list[list[int]]:
        """The inputs as a list: texts, or token-id lists (one per vector)."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and isinstance(value[0], int):
            return [value]
        return value  # type: ignore[return-value]


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # a base64 string of float32 little-endian values with encoding_format base64


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
