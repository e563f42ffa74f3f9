"""What the HTTP side asks of the engine: one typed command each, and what comes back; plain picklable data
(no MLX): whatever the engine sends is unpickled in the HTTP process, so its classes must live on this side.

A command `call`ed through `EngineClient.call` gets an answer (its result, or its exception raised at the caller);
one `post`ed gets none. The engine (`core/host.py`) dispatches them by type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Union

from mlx_router.config.discovery import ModelEntry
from mlx_router.engine.params import GenerationRequest


@dataclass(frozen=True)
class CheckModel:
    """Would this model load? Its files are read, nothing is evicted (answer: None, or its ModelLoadError)."""

    entry: ModelEntry


@dataclass(frozen=True)
class LoadModel:
    """Load a model after evicting `evict` (answer: a LoadResult)."""

    entry: ModelEntry
    evict: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadResult:
    """What the HTTP side learns from a load."""

    cost_bytes: int
    kv_per_token: int


@dataclass(frozen=True)
class EvictModels:
    """Unload idle models to make room (answer: None)."""

    model_ids: tuple[str, ...]


@dataclass(frozen=True)
class UnloadModel:
    """Unload one model (answer: None)."""

    model_id: str


@dataclass(frozen=True)
class ReadMemory:
    """MLX's memory now, optionally after emptying its buffer cache (answer: {"active", "cache", "peak"})."""

    clear_cache: bool = False


@dataclass(frozen=True)
class StartGeneration:
    """Run a generation (posted: its token events come back under its request id)."""

    model_id: str
    request: GenerationRequest


@dataclass(frozen=True)
class EmbedInputs:
    """Embedding vectors of `rows` (token ids), computed in batches with other requests' rows (answer: one
    float32 little-endian byte string per row, in order)."""

    model_id: str
    request_id: str
    rows: tuple[tuple[int, ...], ...]
    dimensions: int | None = None  # Matryoshka truncation (then renormalised)


@dataclass(frozen=True)
class CancelGeneration:
    """Drop a running generation, or an embedding request's rows not yet computed (posted)."""

    model_id: str
    request_id: str
    reason: Literal["cancelled", "timeout"] = "cancelled"  # timeout: a distributed group's deadline (an error)


Call = Union[CheckModel, LoadModel, EvictModels, UnloadModel, ReadMemory, EmbedInputs]  # noqa: UP007 (a runtime alias)
Post = Union[StartGeneration, CancelGeneration]  # noqa: UP007


@dataclass(frozen=True)
class EngineReport:
    """The engine's state, sent after every command and at most every 0.1 s while it works."""

    models: dict[str, Any]  # model id -> the pool's report of it
    mlx: tuple[int, int, int] = (0, 0, 0)  # MLX memory: active, cache, peak (bytes)
    device_memory: int | None = None  # the accelerator's memory (bytes), when MLX reports one
    ranks: list[dict[str, int]] | None = None  # a distributed group: every rank's readings (core/lockstep.py)
    group_budget: int | None = None  # a distributed group: the budget of all ranks together (bytes)
