"""MLXModelManager: the pool of loaded models, their states, memory budget and eviction.

Every state change of a model (load, unload, evict) runs on the MLX worker thread, which makes the worker the
single serialization point: concurrent first requests for a model queue behind one load, and a second load of
a ready model is a no-op. The event loop only reads the states and counts its own references.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from mlx_router.config.discovery import ModelDiscovery, ModelEntry
from mlx_router.config.memory import estimate_model_bytes, kv_bytes_per_token, read_model_config
from mlx_router.config.settings import Settings
from mlx_router.core.dense_rows import prepare_quantized_layers
from mlx_router.core.eviction import PoolEntry, plan_eviction
from mlx_router.core.loader import LoadedModel, free_memory, load_weights, open_tokenizer, read_config
from mlx_router.core.resource_monitor import GB, ResourceMonitor
from mlx_router.core.runner import ModelRunner, RunnerConfig
from mlx_router.core.warmup import warm_up, warmup_plan
from mlx_router.core.worker import MLXWorker
from mlx_router.errors import (
    InsufficientMemoryError,
    ModelLoadError,
    ModelNotFoundError,
    ModelUnloadedError,
    OverloadedError,
)

logger = logging.getLogger(__name__)

ModelState = Literal["stopped", "loading", "ready", "unloading", "failed"]


@dataclass
class ModelSlot:
    """What the pool knows of one model."""

    model_id: str
    state: ModelState = "stopped"
    loaded: LoadedModel | None = None
    runner: ModelRunner | None = None
    cost_bytes: int = 0
    last_used: float = 0.0
    refs: int = 0  # requests holding this model (event-loop side)
    reserved_kv: int = 0  # KV bytes reserved by admitted requests (event-loop side)
    error: str | None = None
    loads: int = 0  # successful loads since start (shared first requests load once)
    kv_per_token: int = 0  # KV bytes a token costs: estimated from config.json, measured once loaded


class MLXModelManager:
    """Finds, loads, keeps and evicts models; admits requests against queue and memory limits."""

    def __init__(
        self,
        settings: Settings,
        discovery: ModelDiscovery,
        worker: MLXWorker,
        monitor: ResourceMonitor,
        grammar_processors: Any = None,
    ) -> None:
        self.settings = settings
        self.discovery = discovery
        self.worker = worker
        self.monitor = monitor
        self._grammar_processors = grammar_processors  # model -> (grammar -> logits processor) factory
        self._slots: dict[str, ModelSlot] = {}
        self._tokenizers: dict[str, Any] = {}
        self._tokenizer_locks: dict[str, asyncio.Lock] = {}
        self._layers_timed: dict[str, int] = {}  # quantized-layer thresholds timed at a model's first load

    # -- lookup ---------------------------------------------------------------------------------------------
    def resolve(self, model_id: str) -> ModelEntry:
        entry = self.discovery.resolve(model_id)
        if entry is None:
            raise ModelNotFoundError(model_id)
        return entry

    def slot(self, model_id: str) -> ModelSlot | None:
        return self._slots.get(model_id)

    def slots(self) -> list[ModelSlot]:
        return list(self._slots.values())

    def estimate_bytes(self, entry: ModelEntry) -> int:
        """Weights (or the configured `required_memory_gb`) times `safety_margin`."""
        return estimate_model_bytes(entry, self.settings)

    # -- tokenizer (no MLX: loaded off the worker thread) ---------------------------------------------------
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

    # -- references and admission (event loop) -------------------------------------------------------------
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

    def admit(self, slot: ModelSlot, kv_tokens: int) -> int:
        """Check queue and memory room for one more request; return the KV bytes reserved for it.

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
            self.worker.post(lambda: self._unload_idle(keep=slot.model_id))
        critical_cap = self.settings.model_settings(slot.model_id).memory_pressure_max_tokens.get("critical")
        if snap.pressure == "critical" and critical_cap is None:
            raise InsufficientMemoryError("memory pressure is critical; try again shortly", retry_after=5)
        per_token = slot.loaded.kv_bytes_per_token if slot.loaded else slot.kv_per_token
        need = per_token * kv_tokens
        if need and self._committed_bytes() + need > self.monitor.budget_bytes():
            raise InsufficientMemoryError(
                f"not enough memory for this request's KV cache ({need / GB:.2f} GB); try again shortly",
                retry_after=2,
            )
        slot.reserved_kv += need
        return need

    def _committed_bytes(self) -> int:
        """Weights, the KV caches admitted requests may grow to, and the prefix caches, of every loaded model."""
        total = 0
        for s in self._slots.values():
            if s.state in ("ready", "loading"):
                total += s.cost_bytes + s.reserved_kv + (s.runner.prefix_bytes() if s.runner else 0)
        return total

    # -- loading (worker thread) ---------------------------------------------------------------------------
    async def ensure_loaded(self, model_id: str) -> ModelRunner:
        """The model's runner, loading the model first if needed (waits; never blocks the event loop)."""
        slot = self._slots.get(model_id)
        if slot is not None and slot.state == "ready" and slot.runner is not None:
            return slot.runner
        entry = self.resolve(model_id)
        tokenizer = await self.tokenizer(model_id)
        return await asyncio.wrap_future(self.worker.call(lambda: self._load(entry, tokenizer)))

    def _load(self, entry: ModelEntry, tokenizer: Any) -> ModelRunner:
        slot = self._slots.setdefault(entry.id, ModelSlot(entry.id))
        if slot.state == "ready" and slot.runner is not None:
            return slot.runner
        read_config(entry.path)  # fail before evicting anything
        cost = self.estimate_bytes(entry)
        self._make_room(entry.id, cost)
        slot.state, slot.error, slot.cost_bytes = "loading", None, cost
        try:
            loaded = load_weights(entry.id, entry.path, tokenizer)
        except ModelLoadError as e:
            slot.state, slot.error, slot.cost_bytes = "failed", e.message, 0
            raise
        d = self.settings.defaults
        layers = prepare_quantized_layers(
            loaded.model,
            d.dense_matmul_min_rows,
            self._layers_timed,
            str(entry.path),
            flat_configured=d.flat_decode_min_batch,
            max_batch=d.max_running_requests,
        )
        if layers:
            logger.info("%s: %s", entry.id, layers)
        slot.loaded = loaded
        slot.loads += 1
        slot.kv_per_token = loaded.kv_bytes_per_token or slot.kv_per_token
        slot.runner = ModelRunner(
            entry.id,
            loaded.model,
            tokenizer,
            self._runner_config(),
            grammar_processor=self._grammar_processors(tokenizer, loaded) if self._grammar_processors else None,
        )
        self._warm_up(slot)
        self.worker.attach(entry.id, slot.runner)
        slot.state, slot.last_used = "ready", time.monotonic()
        return slot.runner

    def _runner_config(self) -> RunnerConfig:
        d = self.settings.defaults
        return RunnerConfig(
            max_running=d.max_running_requests,
            prefill_step_size=d.prefill_step_size,
            prefill_batch_tokens=max(d.prefill_batch_tokens, d.prefill_step_size),
            prefix_cache_bytes=int(d.prefix_cache_gb * GB),
        )

    def _make_room(self, model_id: str, cost: int) -> None:
        entries = [
            PoolEntry(
                s.model_id,
                s.cost_bytes + (s.runner.kv_bytes() if s.runner else 0),
                s.last_used,
                busy=s.refs > 0 or (s.runner is not None and s.runner.has_work()),
            )
            for s in self._slots.values()
            if s.state == "ready" and s.model_id != model_id
        ]
        plan = plan_eviction(entries, cost, self.monitor.budget_bytes(), self.settings.defaults.cache_size)
        if plan is None:
            raise InsufficientMemoryError(
                f"{model_id} needs {cost / GB:.2f} GB and the models in use leave too little; try again later",
                retry_after=10,
            )
        for victim in plan:
            logger.info("evicting %s to make room for %s", victim, model_id)
            self._unload(victim)

    def _unload(self, model_id: str) -> None:
        slot = self._slots.get(model_id)
        if slot is None or slot.state != "ready":
            return
        slot.state = "unloading"
        self.worker.detach(model_id)
        if slot.runner is not None:
            if slot.runner.has_work():  # an operator's unload: the running requests end with an error
                slot.runner.cancel_all(ModelUnloadedError(f"{model_id} was unloaded; try again", retry_after=1))
            slot.runner.close()
        slot.runner, slot.loaded, slot.cost_bytes = None, None, 0
        free_memory()
        slot.state = "stopped"
        logger.info("unloaded %s", model_id)

    def _unload_idle(self, keep: str) -> None:
        """Memory pressure is high: unload every idle model but `keep`, least recently used first."""
        idle = [
            s
            for s in self._slots.values()
            if s.state == "ready"
            and s.model_id != keep
            and s.refs == 0
            and not (s.runner is not None and s.runner.has_work())
        ]
        for s in sorted(idle, key=lambda s: s.last_used):
            logger.warning("memory pressure: unloading idle model %s", s.model_id)
            self._unload(s.model_id)

    async def unload(self, model_id: str) -> None:
        await asyncio.wrap_future(self.worker.call(lambda: self._unload(model_id)))

    def _warm_up(self, slot: ModelSlot) -> None:
        """Run the model through the paths requests take, alone and at each configured batch size (see
        core/warmup.py): the first use of a path or shape compiles kernels (seconds on CUDA), which must not
        land on a user's request."""
        d = self.settings.defaults
        tokens, sizes = warmup_plan(d.warmup_tokens, d.warmup_batch_sizes, d.max_running_requests)
        if tokens <= 0 or slot.loaded is None or slot.runner is None:
            return
        t0 = time.perf_counter()
        seed = slot.loaded.tokenizer.encode("Hello, who are you? Tell me about the weather and the sea.")
        try:
            stages = warm_up(slot.runner, seed, tokens, sizes, long_prompt=d.prefill_step_size + 88)
        except Exception as e:  # the model still works; its first requests may wait for kernel compiles
            logger.warning("warm-up of %s failed, serving it without: %s", slot.model_id, e)
            slot.runner.cancel_all(e)
            stages = []
        slot.runner.forget_history()
        free_memory()
        took = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in stages)
        logger.info("warmed %s up in %.2fs (%s)", slot.model_id, time.perf_counter() - t0, took or "failed")

    async def shutdown(self) -> None:
        for model_id in list(self._slots):
            await self.unload(model_id)
