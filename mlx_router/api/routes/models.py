"""GET /v1/models, GET /v1/models/{id}; POST .../load and DELETE (unload) for operators."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from mlx_router.api.deps import ServicesDep
from mlx_router.config.discovery import ModelEntry
from mlx_router.protocol.models import ModelCard, ModelList
from mlx_router.services import Services

router = APIRouter(tags=["models"])


def _card(s: Services, entry: ModelEntry) -> ModelCard:
    slot = s.manager.slot(entry.id)
    state = slot.state if slot is not None else "stopped"
    vision = s.settings.vision_enabled(entry)
    embedding = s.settings.embedding_spec(entry) is not None
    return ModelCard(
        id=entry.id,
        created=entry.created,
        state=state,
        loaded=state == "ready",
        memory_estimate_gb=round(s.manager.estimate_bytes(entry) / 1024**3, 3),
        source=entry.source,
        supports_vision=vision and not embedding,
        type="embeddings" if embedding else "vlm" if vision else "llm",
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(s: ServicesDep) -> ModelList:
    entries = await asyncio.to_thread(s.discovery.scan)
    return ModelList(data=[_card(s, e) for e in sorted(entries.values(), key=lambda e: e.id)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, s: ServicesDep) -> ModelCard:
    return _card(s, s.manager.resolve(model_id))


@router.post("/v1/models/{model_id:path}/load", response_model=ModelCard)
async def load_model(model_id: str, s: ServicesDep) -> ModelCard:
    entry = s.manager.resolve(model_id)
    await s.manager.ensure_loaded(entry.id)
    return _card(s, entry)


@router.delete("/v1/models/{model_id:path}", response_model=ModelCard)
async def unload_model(model_id: str, s: ServicesDep) -> ModelCard:
    entry = s.manager.resolve(model_id)
    await s.manager.unload(entry.id)
    return _card(s, entry)
