"""The loaded models of the engine: loading, eviction, unloading and warm-up, on the MLX worker thread only.

This is the half of model management that touches MLX; `MLXModelManager` (the HTTP side) keeps requests'
references and admission, and asks for checks, loads and evictions. Running on the one worker thread makes
every state change of a model serial: concurrent first requests queue behind one load, and a second load of a
ready model is a no-op. Which models to evict is the HTTP side's decision (it alone knows which models hold
admitted requests); a load is told whom to evict, checks the model's files first, and refuses rather than load
past the budget or `cache_size`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mlx_router.config.discovery import ModelEntry
from mlx_router.config.memory import estimate_model_bytes
from mlx_router.config.model_files import context_length
from mlx_router.config.settings import Settings
from mlx_router.core.dense_rows import prepare_quantized_layers
from mlx_router.core.embedding_loader import check_decoder_weights, load_decoder_embedding, load_encoder_embedding
from mlx_router.core.embeddings import EmbeddingConfig, EmbeddingRunner
from mlx_router.core.group import RankGroup
from mlx_router.core.loader import (
    LoadedModel,
    check_weights,
    free_memory,
    load_sharded,
    load_solo_vision,
    load_vision_weights,
    load_weights,
    open_tokenizer,
    read_config,
)
from mlx_router.core.lockstep import agreed_failures
from mlx_router.core.runner import ModelRunner, RunnerConfig
from mlx_router.core.vision_solo import SoloVisionRunner
from mlx_router.core.warmup import warm_up, warmup_plan
from mlx_router.core.worker import MLXWorker
from mlx_router.engine.commands import LoadResult
from mlx_router.engine.eviction import PoolEntry, RoomPlan, plan_room
from mlx_router.engine.params import ModelState
from mlx_router.engine.resource_monitor import GB, ResourceMonitor, mlx_readings
from mlx_router.errors import InsufficientMemoryError, ModelLoadError, ModelUnloadedError

logger = logging.getLogger(__name__)


@dataclass
class PooledModel:
    """What the engine holds of one model."""

    model_id: str
    state: ModelState = "stopped"
    loaded: LoadedModel | None = None
    runner: ModelRunner | SoloVisionRunner | EmbeddingRunner | None = None
    cost_bytes: int = 0
    error: str | None = None
    loads: int = 0  # successful loads since start
    kv_per_token: int = 0  # measured once loaded


class ModelPool:
    """The models the engine has loaded (worker thread only)."""

    def __init__(
        self,
        settings: Settings,
        worker: MLXWorker,
        monitor: ResourceMonitor,
        grammar_processors: Callable[[Any, LoadedModel], Any] | None = None,
        group: RankGroup | None = None,
    ) -> None:
        self.settings = settings
        self.group = group  # a distributed group: every rank loads its shard of each model
        self.worker = worker
        self.monitor = monitor
        self._grammar_processors = grammar_processors  # (tokenizer, loaded model) -> (grammar -> processor)
        self.models: dict[str, PooledModel] = {}
        self._layers_timed: dict[str, int] = {}  # quantized-layer thresholds timed at a model's first load
        self._checked: dict[str, Any] = {}  # the model last checked -> its tokenizer, for the load that follows

    def busy(self) -> bool:
        return any(m.runner is not None and m.runner.has_work() for m in self.models.values())

    def runner(self, model_id: str) -> ModelRunner | SoloVisionRunner | EmbeddingRunner | None:
        m = self.models.get(model_id)
        return m.runner if m is not None and m.state == "ready" else None

    # -- loading -------------------------------------------------------------------------------------------
    def check(self, entry: ModelEntry) -> None:
        """What can be checked before anything is evicted for this model: its config, its tokenizer, its
        weights' headers (and, for a text model, their names and shapes). Raises ModelLoadError."""
        self._checked.clear()
        embedding = self.settings.embedding_spec(entry)
        mlx_lm_classes = not (embedding.encoder if embedding else self.settings.vision_path(entry) == "solo")
        try:
            read_config(entry.path, text_classes=mlx_lm_classes)
            tokenizer = open_tokenizer(entry.path)
            if embedding is not None and not embedding.encoder:
                check_decoder_weights(entry.path)
            else:
                check_weights(entry.path, text_model=embedding is None and self.settings.vision_path(entry) is None)
        except ModelLoadError as e:  # health shows why
            m = self.models.setdefault(entry.id, PooledModel(entry.id))
            if m.state != "ready":
                m.state, m.error = "failed", e.message
            raise
        self._checked[entry.id] = tokenizer

    def load(self, entry: ModelEntry, evict: Sequence[str] = ()) -> LoadResult:
        """Load the model after unloading the idle models in `evict` (the HTTP side's choice); refused with a
        503 when it would still not fit. The model is checked first unless `check` just did."""
        m = self.models.setdefault(entry.id, PooledModel(entry.id))
        if m.state == "ready" and m.runner is not None:
            return LoadResult(m.cost_bytes, m.kv_per_token)
        try:
            if entry.id not in self._checked:
                self.check(entry)
            tokenizer = self._checked.pop(entry.id)
            cost = estimate_model_bytes(entry, self.settings)
            self.evict([victim for victim in evict if victim != entry.id], reason=f"to make room for {entry.id}")
            self._check_room(entry.id, cost)
            m.state, m.error, m.cost_bytes = "loading", None, cost
            loaded = self._load_weights(entry, tokenizer)
        except Exception as e:
            if m.state == "loading":
                m.state, m.error, m.cost_bytes = "failed", getattr(e, "message", str(e)), 0
            self._agree(False)  # the other ranks fail this load too
            raise
        failed = self._agree(True)
        if failed:  # the warm-up's collective operations need every rank: none keeps what it loaded
            message = f"{entry.id} could not be loaded on rank(s) {failed} (their logs say why)"
            m.state, m.error, m.cost_bytes = "failed", message, 0
            del loaded
            free_memory()
            raise ModelLoadError(message)
        m.loaded, m.kv_per_token = loaded, loaded.kv_bytes_per_token
        m.loads += 1
        m.runner = self._runner(entry, loaded, tokenizer)
        self._warm_up(m)
        self.worker.attach(entry.id, m.runner)
        m.state = "ready"
        return LoadResult(m.cost_bytes, m.kv_per_token)

    def _agree(self, ok: bool) -> list[int]:
        """In a group: the ranks whose part of a load failed (every rank calls this once per load)."""
        return agreed_failures(self.group, ok) if self.group is not None else []

    def _runner(
        self, entry: ModelEntry, loaded: LoadedModel, tokenizer: Any
    ) -> ModelRunner | SoloVisionRunner | EmbeddingRunner:
        embedding = self.settings.embedding_spec(entry)
        if embedding is not None:
            d = self.settings.defaults
            batch_tokens = max(d.prefill_batch_tokens, d.prefill_step_size)
            config = EmbeddingConfig(batch_tokens=batch_tokens, step_tokens=d.prefill_step_size)
            return EmbeddingRunner(entry.id, loaded.model, embedding, config)
        grammar = self._grammar_processors(tokenizer, loaded) if self._grammar_processors else None
        if loaded.solo_processor is not None:
            context = self.settings.model_settings(entry.id).max_context_tokens or context_length(loaded.config)
            return SoloVisionRunner(
                entry.id, loaded.model, loaded.solo_processor, tokenizer, self._runner_config(), grammar, context
            )
        d = self.settings.defaults
        # Timed choices of kernels could differ between ranks (and timing a sharded layer runs its collective)
        layers = (
            ""
            if self.group is not None
            else prepare_quantized_layers(
                loaded.model,
                d.dense_matmul_min_rows,
                self._layers_timed,
                str(entry.path),
                flat_configured=d.flat_decode_min_batch,
                max_batch=d.max_running_requests,
            )
        )
        if layers:
            logger.info("%s: %s", entry.id, layers)
        runner_config = self._runner_config()
        stream = None
        if self.group is not None:  # every rank's prefix cache keeps and drops the same entries
            runner_config = dataclasses.replace(runner_config, prefix_bytes_per_token=loaded.kv_bytes_per_token)
            stream = self.group.stream
        return ModelRunner(entry.id, loaded.model, tokenizer, runner_config, grammar, loaded.vision, stream)

    def _load_weights(self, entry: ModelEntry, tokenizer: Any) -> LoadedModel:
        embedding = self.settings.embedding_spec(entry)
        if embedding is not None:
            loader = load_encoder_embedding if embedding.encoder else load_decoder_embedding
            return loader(entry.id, entry.path, tokenizer)
        if self.group is not None:
            if self.settings.vision_path(entry) is not None:
                raise ModelLoadError(
                    f"{entry.id}: vision models are not served across several machines (set supports_vision: "
                    "false for its text)"
                )
            return load_sharded(entry.id, entry.path, tokenizer, self.group.group, self.settings.distributed.parallel)
        if self.settings.vision_path(entry) == "solo":
            return load_solo_vision(entry.id, entry.path, tokenizer)
        if self.settings.vision_path(entry) == "handover":
            cache_bytes = int(self.settings.defaults.image_cache_gb * GB)
            return load_vision_weights(entry.id, entry.path, tokenizer, cache_bytes)
        return load_weights(entry.id, entry.path, tokenizer)

    def _runner_config(self) -> RunnerConfig:
        d = self.settings.defaults
        timed_holds = self.group is None  # a rank's clock must not decide what the batch does (core/lockstep.py)
        return RunnerConfig(
            max_running=d.max_running_requests,
            prefill_step_size=d.prefill_step_size,
            prefill_batch_tokens=max(d.prefill_batch_tokens, d.prefill_step_size),
            prefix_cache_bytes=int(d.prefix_cache_gb * GB),
            prefill_gather_ms=d.prefill_gather_ms if timed_holds else 0.0,
            idle_gather_ms=d.idle_gather_ms if timed_holds else 0.0,
        )

    def _check_room(self, model_id: str, cost: int) -> None:
        """Refuse a load that would not fit beside the models loaded now (none of them is evicted here)."""
        loaded = [
            PoolEntry(m.model_id, m.cost_bytes + (m.runner.kv_bytes() if m.runner else 0), 0.0, busy=True)
            for m in self.models.values()
            if m.state == "ready" and m.model_id != model_id
        ]
        budget, cache_size = self.monitor.budget_bytes(), self.settings.defaults.cache_size
        plan = plan_room(loaded, cost, budget, cache_size)
        if plan.limit is not None:
            raise InsufficientMemoryError(_refusal(model_id, cost, budget, cache_size, plan), retry_after=10)

    def _warm_up(self, m: PooledModel) -> None:
        """Run the model through the paths requests take, alone and at each configured batch size (see
        core/warmup.py): the first use of a path or shape compiles kernels (seconds on CUDA), which must not
        land on a user's request."""
        d = self.settings.defaults
        tokens, sizes = warmup_plan(d.warmup_tokens, d.warmup_batch_sizes, d.max_running_requests)
        if tokens > 0 and m.loaded is not None and isinstance(m.runner, EmbeddingRunner):
            t0 = time.perf_counter()
            m.runner.warm_up(m.loaded.tokenizer.encode("Hello, who are you? Tell me about the weather and the sea."))
            free_memory()
            logger.info("warmed %s up in %.2fs (alone, batched)", m.model_id, time.perf_counter() - t0)
            return
        if tokens <= 0 or m.loaded is None or not isinstance(m.runner, ModelRunner):
            return  # a model mlx-vlm serves alone has no batch paths to compile ahead
        t0 = time.perf_counter()
        seed = m.loaded.tokenizer.encode("Hello, who are you? Tell me about the weather and the sea.")
        try:
            stages = warm_up(m.runner, seed, tokens, sizes, long_prompt=d.prefill_step_size + 88)
        except Exception as e:  # the model still works; its first requests may wait for kernel compiles
            logger.warning("warm-up of %s failed, serving it without: %s", m.model_id, e)
            m.runner.cancel_all(e)
            stages = []
        m.runner.forget_history()
        free_memory()
        took = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in stages)
        logger.info("warmed %s up in %.2fs (%s)", m.model_id, time.perf_counter() - t0, took or "failed")

    # -- unloading -----------------------------------------------------------------------------------------
    def unload(self, model_id: str) -> None:
        m = self.models.get(model_id)
        if m is None or m.state != "ready":
            return
        m.state = "unloading"
        t0, before = time.perf_counter(), mlx_readings()[0]
        self.worker.detach(model_id)
        if m.runner is not None:
            if m.runner.has_work():  # an operator's unload: the running requests end with an error
                m.runner.cancel_all(ModelUnloadedError(f"{model_id} was unloaded; try again", retry_after=1))
            m.runner.close()
        m.runner, m.loaded, m.cost_bytes = None, None, 0
        free_memory()
        m.state = "stopped"
        logger.info(
            "unloaded %s in %.2fs (MLX memory active %.2f -> %.2f GB)",
            model_id,
            time.perf_counter() - t0,
            before / GB,
            mlx_readings()[0] / GB,
        )

    def evict(self, model_ids: Sequence[str], reason: str = "") -> None:
        """Unload models the HTTP side found idle (no request of theirs is admitted: work they still hold
        here is what cancelled requests left, and ends with them)."""
        for model_id in model_ids:
            m = self.models.get(model_id)
            if m is not None and m.state == "ready":
                logger.info("evicting %s %s", model_id, reason or "(idle)")
                self.unload(model_id)

    def unload_all(self) -> None:
        for model_id in list(self.models):
            self.unload(model_id)

    # -- what the HTTP side is told ------------------------------------------------------------------------
    def report(self) -> dict[str, dict[str, Any]]:
        """Per model: state, counts and the memory its KV caches hold (snapshots the runners refresh)."""
        out = {}
        for m in self.models.values():
            running, queued = m.runner.counts() if m.runner is not None else (0, 0)
            out[m.model_id] = {
                "state": m.state,
                "error": m.error,
                "loads": m.loads,
                "cost_bytes": m.cost_bytes,
                "kv_per_token": m.kv_per_token,
                "running": running,
                "queued": queued,
                "kv_bytes": m.runner.kv_bytes() if m.runner is not None else 0,
                "prefix_bytes": m.runner.prefix_bytes() if m.runner is not None else 0,
            }
        return out


def _refusal(model_id: str, cost: int, budget: int, cache_size: int, plan: RoomPlan) -> str:
    """The refusal's message names the limit: the budget, `cache_size`, or the memory of the models in use."""
    if plan.limit == "budget":
        return (
            f"{model_id} needs {cost / GB:.2f} GB (its weights x safety_margin), more than the whole memory budget "
            f"({budget / GB:.2f} GB, memory_budget_gb)"
        )
    in_use = ", ".join(plan.busy_models) or "none"
    if plan.limit == "cache_size":
        return f"cache_size is {cache_size} and every loaded model is in use ({in_use}); try again shortly"
    return (
        f"{model_id} needs {cost / GB:.2f} GB and the models in use ({in_use}) hold {plan.busy_bytes / GB:.2f} GB "
        f"of the {budget / GB:.2f} GB memory budget; try again shortly"
    )
