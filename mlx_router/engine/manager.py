"""MLXModelManager: the models as the HTTP side sees them: references, admission, tokenizers, loads on demand.

The models themselves live in the engine (`core/pool.py`), where every state change of a model runs on the one
MLX worker thread, the single serialization point: concurrent first requests for a model queue behind one load.
This side counts the requests holding each model and the KV memory reserved for them, admits or refuses new
requests (429 / 503) before any byte is streamed, and reads states, counts and memory from the engine's latest
report, so nothing here waits on MLX.

Eviction is decided here, because only this side knows every admitted request at once: a request for a loaded
model goes to the engine as soon as it is admitted, and a plan made in the engine from an earlier snapshot
evicted models whose requests were on their way (issue 20, item 9). A model holding admitted requests, or
loading, is never chosen; a chosen model shows `unloading` until the engine has unloaded it, so a request that
arrives meanwhile waits for a load of its own instead of being sent to a model about to go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mlx_router.config.discovery import ModelDiscovery, ModelEntry
from mlx_router.config.memory import estimate_model_bytes, kv_bytes_per_token, read_model_config
from mlx_router.config.settings import Settings
from mlx_router.engine.client import EngineClient
from mlx_router.engine.commands import CheckModel, EvictModels, LoadModel, UnloadModel
from mlx_router.engine.eviction import PoolEntry, RoomPlan, plan_room
from mlx_router.engine.params import ModelState
from mlx_router.engine.resource_monitor import GB, ResourceMonitor
from mlx_router.errors import InsufficientMemoryError, ModelNotFoundError, OverloadedError
from mlx_router.serving.tokenizer import open_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class LoadJob:
    """One load of one model, shared by every request that waits for it: `admitted` resolves once the engine
    found the model's files sound and room was made (a refusal is known then, before any response starts),
    `done` once the weights are loaded."""

    admitted: asyncio.Future[None]
    done: asyncio.Future[None]
    task: asyncio.Task[None] | None = None


@dataclass
class ModelSlot:
    """What the HTTP side knows of one model."""

    model_id: str
    refs: int = 0  # requests holding this model
    reserved_kv: int = 0  # KV bytes reserved by admitted requests
    last_used: float = 0.0
    kv_per_token: int = 0  # KV bytes a token costs: estimated from config.json, measured once loaded
    estimate_bytes: int = 0  # what loading it costs (weights x safety_margin), before the engine says
    load: LoadJob | None = None  # the load in progress
    evicting: int = 0  # evictions asked for and not answered yet: it is going, whatever the report says
    state: ModelState = "stopped"  # from the engine's report ("loading" / "unloading" while asked for)
    cost_bytes: int = 0
    error: str | None = None
    loads: int = 0
    running: int = 0
    queued: int = 0
    kv_bytes: int = 0
    prefix_bytes: int = 0

    @property
    def live(self) -> bool:
        """Loaded or loading, and not on its way out: it counts against the budget and `cache_size`."""
        return self.state in ("ready", "loading") and not self.evicting

    @property
    def held_bytes(self) -> int:
        """Its weights (the estimate while loading), the KV caches its requests may grow to, its prefix cache."""
        return (self.cost_bytes or self.estimate_bytes) + self.reserved_kv + self.prefix_bytes


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
        # One load at a time, whatever the model: transformers imports its tokenizer classes lazily, and two
        # threads importing them at once can see a half-imported module ("cannot import name AutoTokenizer")
        self._tokenizer_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()  # evictions in flight (a task needs a reference)
        self.evictions: Counter[str] = Counter()  # model id -> evictions decided here (the metrics read it)

    # -- lookup ---------------------------------------------------------------------------------------------
    def resolve(self, model_id: str) -> ModelEntry:
        entry = self.discovery.resolve(model_id)
        if entry is None:
            skipped = self.discovery.unservable(model_id) if isinstance(model_id, str) else None
            raise ModelNotFoundError(model_id, skipped)
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
        report = self.client.report.models
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
            if slot.load is not None and slot.state != "ready":
                slot.state = "loading"
            if slot.evicting:
                slot.state = "unloading"

    def _new_slot(self, entry: ModelEntry) -> ModelSlot:
        slot = self._slots.get(entry.id)
        if slot is None:
            slot = self._slots[entry.id] = ModelSlot(entry.id)
        if not slot.estimate_bytes:
            slot.estimate_bytes = self.estimate_bytes(entry)
            slot.kv_per_token = slot.kv_per_token or kv_bytes_per_token(read_model_config(entry.path))
        return slot

    # -- tokenizer (loaded off the event loop) -------------------------------------------------------------
    async def tokenizer(self, model_id: str) -> Any:
        """The model's tokenizer; loaded once, shared by concurrent first requests."""
        if model_id in self._tokenizers:
            return self._tokenizers[model_id]
        entry = self.resolve(model_id)
        async with self._tokenizer_lock:
            if model_id not in self._tokenizers:
                self._tokenizers[model_id] = await asyncio.to_thread(open_tokenizer, entry.path)
        return self._tokenizers[model_id]

    # -- references and admission --------------------------------------------------------------------------
    def acquire(self, model_id: str) -> ModelSlot:
        slot = self._slots.get(model_id)
        if slot is None or not slot.estimate_bytes:
            slot = self._new_slot(self.resolve(model_id))
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

        Idle models count as room: when the request fits only without them, they are evicted (a loaded
        model's at once; for a model still to load, its load evicts them). Raises OverloadedError (429) when
        the model's running+queued requests are at their limit, and InsufficientMemoryError (503, naming the
        limit) when memory is critical or the request does not fit even with every idle model evicted.
        """
        d = self.settings.defaults
        if slot.refs > d.max_running_requests + d.max_queued_requests:
            raise OverloadedError(
                f"{slot.model_id} has {slot.refs - 1} requests running or queued; try again shortly",
                retry_after=2,
            )
        self._refresh()
        snap = self.monitor.snapshot()
        if snap.pressure in ("high", "critical"):
            idle = [s for s in self._slots.values() if s is not slot and s.live and not self._busy(s)]
            if idle:
                logger.warning(
                    "memory pressure %s: unloading idle models %s", snap.pressure, [s.model_id for s in idle]
                )
                self._evict(sorted(idle, key=lambda s: s.last_used))
        critical_cap = self.settings.model_settings(slot.model_id).memory_pressure_max_tokens.get("critical")
        if snap.pressure == "critical" and critical_cap is None:
            raise InsufficientMemoryError("memory pressure is critical; try again shortly", retry_after=5)
        need = slot.kv_per_token * kv_tokens + extra_bytes
        plan = self._plan(slot, need)
        if plan.limit is not None:
            raise self._refusal(slot, need, plan)
        if plan.evict and slot.live:
            self._evict(self._slots[model_id] for model_id in plan.evict)
        slot.reserved_kv += need
        return need

    def _busy(self, slot: ModelSlot) -> bool:
        return slot.refs > 0 or slot.load is not None

    def _plan(self, slot: ModelSlot, need: int) -> RoomPlan:
        """What `slot`'s model (loaded or to load) with `need` more bytes takes: which idle models must go."""
        others = [
            PoolEntry(s.model_id, s.held_bytes, s.last_used, busy=self._busy(s))
            for s in self._slots.values()
            if s is not slot and s.live
        ]
        return plan_room(others, slot.held_bytes + need, self.monitor.budget_bytes(), self.settings.defaults.cache_size)

    def _refusal(self, slot: ModelSlot, need: int, plan: RoomPlan) -> InsufficientMemoryError:
        """A 503 whose message names the limit that refuses: the budget, `cache_size`, or the busy models."""
        budget = self.monitor.budget_bytes() / GB
        weights = (slot.cost_bytes or slot.estimate_bytes) / GB
        busy = ", ".join(plan.busy_models) or "none"
        if plan.limit == "budget" and weights > budget:
            message = (
                f"{slot.model_id} needs {weights:.2f} GB (its weights x safety_margin), more than the whole memory "
                f"budget ({budget:.2f} GB, memory_budget_gb): it cannot be loaded"
            )
            return InsufficientMemoryError(message, retry_after=10)
        if plan.limit == "budget":
            message = (
                f"{slot.model_id} ({weights:.2f} GB) with the KV caches of its requests, this one's {need / GB:.2f} GB "
                f"included, needs more than the whole memory budget ({budget:.2f} GB, memory_budget_gb); "
                "lower max_tokens"
            )
            return InsufficientMemoryError(message, retry_after=10)
        if plan.limit == "cache_size":
            message = (
                f"cache_size is {self.settings.defaults.cache_size} and every loaded model is serving requests "
                f"({busy}): {slot.model_id} cannot be loaded until one is idle; try again shortly"
            )
            return InsufficientMemoryError(message, retry_after=5)
        if slot.live:
            held = (slot.held_bytes + plan.busy_bytes) / GB
            message = (
                f"not enough memory for this request's KV cache ({need / GB:.2f} GB): {slot.model_id} and the "
                f"models serving requests ({busy}) hold {held:.2f} GB of the {budget:.2f} GB memory budget; "
                "try again shortly"
            )
            return InsufficientMemoryError(message, retry_after=2)
        message = (
            f"{slot.model_id} needs {(slot.held_bytes + need) / GB:.2f} GB and the models serving requests ({busy}) "
            f"hold {plan.busy_bytes / GB:.2f} GB of the {budget:.2f} GB memory budget; try again shortly"
        )
        return InsufficientMemoryError(message, retry_after=10)

    def _evict(self, victims: Iterable[ModelSlot]) -> None:
        """Unload idle models in the engine; they show `unloading` (and take no requests) until it answers."""
        chosen = list(victims)
        self.evictions.update(s.model_id for s in chosen)
        for s in chosen:
            s.evicting += 1
            s.state = "unloading"
        task = asyncio.ensure_future(self._unload_evicted(chosen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unload_evicted(self, chosen: list[ModelSlot]) -> None:
        try:
            await self.client.call(EvictModels(tuple(s.model_id for s in chosen)))
        except Exception as e:  # the engine went away: its models went with it
            logger.warning("evicting %s failed: %s", [s.model_id for s in chosen], e)
        finally:
            for s in chosen:
                s.evicting -= 1
            self._refresh()

    # -- loading (in the engine) ---------------------------------------------------------------------------
    async def prepare_load(self, model_id: str) -> LoadJob | None:
        """Start loading the model unless it is loaded, and wait until the load is under way: the engine found
        its files sound and room was made. Raises what refuses the load (ModelLoadError, a 503 naming the
        limit) before any response starts; the weights then load while the response waits (`ensure_loaded`
        with the job returned; None: the model is loaded)."""
        job = self._load_job(model_id)
        if job is not None:
            await asyncio.shield(job.admitted)
        return job

    async def ensure_loaded(self, model_id: str, job: LoadJob | None = None) -> None:
        """Load the model in the engine if it is not loaded, or wait for `job`, a load `prepare_load` started
        (waits; never blocks the event loop)."""
        job = job or self._load_job(model_id)
        if job is not None:
            await asyncio.shield(job.done)

    def _load_job(self, model_id: str) -> LoadJob | None:
        """The load of `model_id` in progress, started if there is none; None when the model is loaded."""
        slot = self.slot(model_id)
        if slot is not None and slot.load is not None:
            return slot.load
        if slot is not None and slot.state == "ready":
            return None
        entry = self.resolve(model_id)
        slot = self._new_slot(entry)
        loop = asyncio.get_running_loop()
        job = slot.load = LoadJob(loop.create_future(), loop.create_future())
        slot.state = "loading"
        job.task = asyncio.ensure_future(self._run_load(entry, slot, job))
        return job

    async def _run_load(self, entry: ModelEntry, slot: ModelSlot, job: LoadJob) -> None:
        evicted: list[ModelSlot] = []
        try:
            await self.client.call(CheckModel(entry))  # before anything is evicted for it
            self._refresh()
            plan = self._plan(slot, 0)
            if plan.limit is not None:
                raise self._refusal(slot, 0, plan)
            evicted = [self._slots[model_id] for model_id in plan.evict]
            self.evictions.update(plan.evict)
            for s in evicted:
                s.evicting += 1
            _resolve(job.admitted)
            result = await self.client.call(LoadModel(entry, tuple(plan.evict)))
            slot.kv_per_token = result.kv_per_token or slot.kv_per_token
            _resolve(job.done)
        except BaseException as e:
            _fail(job.admitted, e)
            _fail(job.done, e)
            if not isinstance(e, Exception):
                raise
        finally:
            for s in evicted:
                s.evicting -= 1
            slot.load = None
            self._refresh()

    async def unload(self, model_id: str) -> None:
        await self.client.call(UnloadModel(model_id))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _fail(fut: asyncio.Future[None], error: BaseException) -> None:
    if fut.done():
        return
    if isinstance(error, Exception):
        fut.set_exception(error)
        fut.exception()  # retrieved: a load nobody waits for any more must not log "never retrieved"
    else:
        fut.cancel()
