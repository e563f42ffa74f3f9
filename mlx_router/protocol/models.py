"""`/v1/models` and health wire types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ModelCard(BaseModel):
    """OpenAI's model object plus this server's state of the model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mlx-router"
    state: Literal["stopped", "loading", "ready", "unloading", "failed"] = "stopped"
    loaded: bool = False
    memory_estimate_gb: float | None = None
    source: str | None = None
    supports_vision: bool = False  # takes images (and PDFs as page images)
    # what it serves, in LM Studio's words: llm and vlm generate (chat, completions); embeddings: /v1/embeddings
    type: Literal["llm", "vlm", "embeddings"] = "llm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
