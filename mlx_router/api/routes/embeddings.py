"""POST /v1/embeddings."""

from __future__ import annotations

from fastapi import APIRouter, Request

from mlx_router.api.deps import ServicesDep
from mlx_router.api.request_log import request_record
from mlx_router.protocol.embeddings import EmbeddingRequest, EmbeddingResponse

router = APIRouter(tags=["embeddings"])


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, request: Request, s: ServicesDep) -> EmbeddingResponse:
    record = request_record(request)
    record.model = body.model
    prepared = await s.embeddings.prepare(body, record.id)
    return await s.embeddings.embed(prepared)
