"""`/v1/embeddings`: inputs to token ids checked against the model, vectors from the engine (`Engine.embed`, which
admits the request as a generation is: 429/503 with Retry-After), OpenAI's answer."""

from __future__ import annotations

import asyncio
import base64
import sys
from array import array
from dataclasses import dataclass
from typing import Any

from mlx_router.config.embedding_spec import EmbeddingSpec
from mlx_router.config.model_files import context_length, read_json
from mlx_router.config.settings import Settings
from mlx_router.engine.commands import EmbedInputs
from mlx_router.engine.interface import Engine
from mlx_router.engine.manager import MLXModelManager
from mlx_router.errors import InvalidRequestError, RequestTimeoutError
from mlx_router.observability.ids import RequestId
from mlx_router.protocol.embeddings import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from mlx_router.serving.offload import INLINE_ENCODE_CHARS, run_sized

# float32 activations a token holds during a forward pass, besides its KV cache: the hidden and MLP states of one
# layer, in and out, (hidden_size + intermediate_size) values each
ACTIVATION_FLOATS = 2


@dataclass(frozen=True)
class PreparedEmbedding:
    """A request checked and tokenized, ready for the engine."""

    request: EmbeddingRequest
    request_id: str
    spec: EmbeddingSpec
    rows: tuple[tuple[int, ...], ...]
    activation_bytes_per_token: int

    @property
    def tokens(self) -> int:
        return sum(len(r) for r in self.rows)


def _encode_all(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return [list(tokenizer.encode(text)) for text in texts]


class EmbeddingService:
    """Validates embedding requests and runs them on the engine."""

    def __init__(self, settings: Settings, engine: Engine, manager: MLXModelManager) -> None:
        self._settings = settings
        self._engine = engine
        self._manager = manager  # model lookup and tokenizers

    async def prepare(self, req: EmbeddingRequest, rid: RequestId | None = None) -> PreparedEmbedding:
        """The request's token ids, checked against the model: a 400 for a chat model, `dimensions` it cannot
        give, token ids outside its vocabulary, an input longer than its context."""
        rid = rid or RequestId.new()
        manager = self._manager
        entry = manager.resolve(req.model)
        spec = self._settings.embedding_spec(entry)
        if spec is None:
            raise InvalidRequestError(
                f"'{req.model}' is a text generation model, not an embedding model: use /v1/chat/completions or "
                "/v1/completions with it, and an embedding model (GET /v1/models lists their type) here",
                param="model",
                code="model_not_supported",
            )
        config = read_json(entry.path / "config.json")
        self._check_dimensions(req, spec, config)
        items = req.items()
        if isinstance(items[0], str):
            texts: list[str] = items
            tokenizer = await manager.tokenizer(req.model)
            rows = await run_sized(sum(map(len, texts)), INLINE_ENCODE_CHARS, _encode_all, tokenizer, texts)
        else:
            rows = items
            vocab = int(config.get("vocab_size") or 0)
            if vocab and any(not 0 <= t < vocab for row in rows for t in row):
                raise InvalidRequestError(f"input token ids must be below the vocabulary size ({vocab})", param="input")
        context = self._settings.model_settings(entry.id).max_context_tokens or context_length(config)
        for index, row in enumerate(rows):
            if not row:
                raise InvalidRequestError(f"input[{index}] has no tokens", param="input")
            if context is not None and len(row) > context:
                raise InvalidRequestError(
                    f"input[{index}] has {len(row)} tokens and this model's context is {context}",
                    param="input",
                    code="context_length_exceeded",
                )
        width = int(config.get("hidden_size") or 0) + int(config.get("intermediate_size") or 0)
        rows_t = tuple(tuple(row) for row in rows)
        return PreparedEmbedding(req, rid.engine_id("emb"), spec, rows_t, 4 * ACTIVATION_FLOATS * width)

    @staticmethod
    def _check_dimensions(req: EmbeddingRequest, spec: EmbeddingSpec, config: dict[str, Any]) -> None:
        if req.dimensions is None:
            return
        if not spec.matryoshka:
            raise InvalidRequestError(
                f"'{req.model}' was not trained for shortened vectors (Matryoshka); leave dimensions out",
                param="dimensions",
            )
        size = config.get("hidden_size")
        if isinstance(size, int) and req.dimensions > size:
            raise InvalidRequestError(
                f"dimensions is {req.dimensions}; '{req.model}' makes vectors of {size}", param="dimensions"
            )

    async def embed(self, p: PreparedEmbedding) -> EmbeddingResponse:
        """Admit, load the model if needed, compute (within the server's timeout)."""
        timeout = self._settings.defaults.timeout
        inputs = EmbedInputs(p.request.model, p.request_id, p.rows, p.request.dimensions)
        try:
            async with asyncio.timeout(timeout):
                blobs = await self._engine.embed(inputs, p.activation_bytes_per_token)
        except TimeoutError:
            raise RequestTimeoutError(
                f"the embeddings did not finish within the server's timeout of {timeout:g}s"
            ) from None
        return self._response(p, blobs)

    @staticmethod
    def _response(p: PreparedEmbedding, blobs: list[bytes]) -> EmbeddingResponse:
        if p.request.encoding_format == "base64":
            data = [Embedding(index=i, embedding=base64.b64encode(b).decode("ascii")) for i, b in enumerate(blobs)]
        else:
            data = [Embedding(index=i, embedding=_floats(b)) for i, b in enumerate(blobs)]
        usage = EmbeddingUsage(prompt_tokens=p.tokens, total_tokens=p.tokens)
        return EmbeddingResponse(data=data, model=p.request.model, usage=usage)


def _floats(blob: bytes) -> list[float]:
    values = array("f")
    values.frombytes(blob)
    if sys.byteorder == "big":  # the engine sends float32 little-endian
        values.byteswap()
    return values.tolist()
