"""MLXModelManager: the models as the HTTP side sees them: references, admission, tokenizers, loads on demand.

The models themselves live in the engine (`core/pool.py`), where every state change of a model runs on the one
MLX worker thread, the single serialization point: concurrent first requests for a model queue behind one load.
This side counts the requests holding each model and the KV memory reserved for them, admits or refuses new
requests (429 / 503) before any byte is streamed, and reads states, counts and memory from the engine's latest
report, so nothing here waits on MLX.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from mlx_router.config.discovery import ModelDiscovery, ModelEntry
from mlx_router.config.memory import estimate_model_bytes, kv_bytes_per_token, read_model_config
from mlx_router.config.settings import Settings
from mlx_router.core.client import EngineClient
from mlx_router.core.loader import open_tokenizer
from mlx_router.core.params import ModelState, Usage
from mlx_router.core.resource_monitor import GB, ResourceMonitor
from mlx_router.errors import InsufficientMemoryError, ModelNotFoundError, OverloadedError


@dataclass
class ModelSlot:
    """What the HTTP side knows of one model."""

    model_id: str
    refs: int = 0  # requests holding this model
    reserved_kv: int = 0  # KV bytes reserved by admitted requests
    last_used: float = 0.0
    kv_per_token: int = 0  # KV bytes a token costs: estimated from config.json, measured once loaded
    loading: int = 0  # loads asked for and not answered yet
    state: ModelState = "stopped"  # from the engine's report (or "loading" while a load is asked for)
    cost_bytes: int = 0
    error: str | None = None
    loads: int = 0
    running: int = 0
    queued: int = 0
    kv_bytes: int = 0
    prefix_bytes: int = 0


class MLXModelManager:
    """Finds models, loads them through the engine, admits requests against queue and memory limits."""

    def __init__(
        self, settings: Settings, discovery: ModelDiscovery, client: EngineClient, monitor: ResourceMonitor
    ) -> None:
        self.settings = settings
        self.discovery = discovery
        self.client = client
        self.monitor = monitor
        self._slots: dict[str, ModelSlot] = {}
        self._tokenizers: dict[str, Any] = {}
        self._tokenizer_locks: dict[str, asyncio.Lock] = {}

    # -- lookup ---------------------------------------------------------------------------------------------
    def resolve(self, model_id: str) -> ModelEntry:
        entry = self.discovery.resolve(model_id)
        if entry is None:
            raise ModelNotFoundError(model_id)
        return entry

    def slot(self, model_id: str) -> ModelSlot | None:
        self._refresh()
        return self._slots.get(model_id)

    def slots(self) -> list[ModelSlot]:
        self._refresh()
        return list(self._slots.values())

    def estimate_bytes(self, entry: ModelEntry) -> int:
        """Weights (or the configured `required_memory_gb`) times `safety_margin`."""
        return estimate_model_bytes(entry, self.settings)

    def _refresh(self) -> None:
        """Bring the slots up to the engine's latest report."""
        report = self.client.report["models"]
        for model_id, r in report.items():
            slot = self._slots.setdefault(model_id, ModelSlot(model_id))
            slot.state = r["state"]
            slot.cost_bytes, slot.error, slot.loads = r["cost_bytes"], r["error"], r["loads"]
            slot.running, slot.queued = r["running"], r["queued"]
            slot.kv_bytes, slot.prefix_bytes = r["kv_bytes"], r["prefix_bytes"]
            slot.kv_per_token = r["kv_per_token"] or slot.kv_per_token
        for slot in self._slots.values():
            if slot.model_id not in report:
                slot.state, slot.cost_bytes, slot.running, slot.queued = "stopped", 0, 0, 0
                slot.kv_bytes = slot.prefix_bytes = 0
            if slot.loading and slot.state != "ready":
                slot.state = "loading"

    def _usage(self) -> Usage:
        return {s.model_id: (s.refs, s.last_used) for s in self._slots.values()}

    # -- tokenizer (loaded off the event loop) -------------------------------------------------------------
    async def tokenizer(self, model_id: str) -> Any:
        """The model's tokenizer; loaded once, shared by concurrent first requests."""
        if model_id in self._tokenizers:
            return self._tokenizers[model_id]
        entry = self.resolve(model_id)
        lock = self._tokenizer_locks.setdefault(model_id, asyncio.Lock())
        async with lock:
            if model_id not in self._tokenizers:
                self._tokenizers[model_id] = await asyncio.to_thread(open_tokenizer, entry.path)
        return self._tokenizers[model_id]

    # -- references and admission --------------------------------------------------------------------------
    def acquire(self, model_id: str) -> ModelSlot:
        slot = self._slots.get(model_id)
        if slot is None:
            entry = self.resolve(model_id)
            slot = self._slots.setdefault(model_id, ModelSlot(model_id))
            slot.kv_per_token = kv_bytes_per_token(read_model_config(entry.path))
        slot.refs += 1
        slot.last_used = time.monotonic()
        return slot

    def release(self, slot: ModelSlot, reserved_kv: int = 0) -> None:
        slot.refs = max(0, slot.refs - 1)
        slot.reserved_kv = max(0, slot.reserved_kv - reserved_kv)
        slot.last_used = time.monotonic()

    def admit(self, slot: ModelSlot, kv_tokens: int, extra_bytes: int = 0) -> int:
        """Check queue and memory room for one more request; return the KV bytes reserved for it (and
        `extra_bytes`, the activations of encoding its images).

        Raises OverloadedError (429) when the model's running+queued requests are at their limit, and
        InsufficientMemoryError (503) when memory is critical or the request's KV cache would not fit.
        """
        d = self.settings.defaults
        if slot.refs > d.max_running_requests + d.max_queued_requests:
            raise OverloadedError(
                f"{slot.model_id} has {slot.refs - 1} requests running or queued; try again shortly",
                retry_after=2,
            )
        snap = self.monitor.snapshot()
        if snap.pressure in ("high", "critical"):
            self.client.post("unload_idle", keep=slot.model_id, usage=self._usage())
        critical_cap = self.settings.model_settings(slot.model_id).memory_pressure_max_tokens.get("critical")
        if snap.pressure == "critical" and critical_cap is None:
            raise InsufficientMemoryError("memory pressure is critical; try again shortly", retry_after=5)
        self._refresh()
        need = slot.kv_per_token * kv_tokens + extra_bytes
        if need and self._committed_bytes() + need > self.monitor.budget_bytes():
            raise InsufficientMemoryError(
                f"not enough memory for this request's KV cache ({need / GB:.2f} GB); try again shortly",
                retry_after=2,
            )
        slot.reserved_kv += need
        return need

    def _committed_bytes(self) -> int:
        """Weights, the KV caches admitted requests may grow to, and the prefix caches, of every loaded model."""
        live = [s for s in self._slots.values() if s.state in ("ready", "loading")]
        return sum(s.cost_bytes + s.reserved_kv + s.prefix_bytes for s in live)

    # -- loading (in the engine) ---------------------------------------------------------------------------
    async def ensure_loaded(self, model_id: str) -> None:
        """Load the model in the engine if it is not loaded (waits; never blocks the event loop)."""
        slot = self.slot(model_id)
        if slot is not None and slot.state == "ready":
            return
        entry = self.resolve(model_id)
        slot = self._slots.setdefault(model_id, ModelSlot(model_id))
        slot.loading += 1
        try:
            result = await self.client.call("load", entry=entry, usage=self._usage())
        finally:
            slot.loading -= 1
        slot.kv_per_token = result.kv_per_token or slot.kv_per_token

    async def unload(self, model_id: str) -> None:
        await self.client.call("unload", model_id=model_id)
