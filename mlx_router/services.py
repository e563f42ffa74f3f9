"""Everything a running server holds, built in one place from the settings (FastAPI's lifespan calls this)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from mlx_router.config.discovery import ModelDiscovery, default_hf_cache_dirs
from mlx_router.config.settings import Settings
from mlx_router.engine.activity import Activity
from mlx_router.engine.backend_env import configure_backend
from mlx_router.engine.client import EngineClient
from mlx_router.engine.interface import Engine
from mlx_router.engine.manager import MLXModelManager
from mlx_router.engine.resource_monitor import ResourceMonitor
from mlx_router.log_ring import LogRing
from mlx_router.observability.metrics import RouterMetrics
from mlx_router.serving.chat import ChatRenderer
from mlx_router.serving.completions import CompletionService
from mlx_router.serving.embeddings import EmbeddingService
from mlx_router.serving.generation import GenerationService
from mlx_router.serving.prepare import GenerationPreparer
from mlx_router.serving.profiles import ProfileStore
from mlx_router.serving.response_store import ResponseStore
from mlx_router.serving.responses import ResponsesService

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """The server's shared objects, held on `app.state.services`."""

    settings: Settings
    discovery: ModelDiscovery
    client: EngineClient
    monitor: ResourceMonitor
    manager: MLXModelManager
    engine: Engine
    profiles: ProfileStore
    preparer: GenerationPreparer  # any API's conversation -> a ready generation
    generation: GenerationService  # a ready generation -> API-neutral events
    chat: ChatRenderer
    responses: ResponsesService  # /v1/responses, with its store for previous_response_id
    completions: CompletionService
    embeddings: EmbeddingService
    metrics: RouterMetrics  # this app's Prometheus registry (GET /metrics)
    activity: Activity  # tokens and requests as the HTTP side saw them (the dashboard's throughput)
    log_ring: LogRing  # the recent log records (the dashboard's log)

    async def aclose(self) -> None:
        """Stop the engine (it unloads every model first) and the PDF workers, off the event loop."""
        try:
            await asyncio.to_thread(self.client.stop)
        except Exception:  # shutting down: log and go on
            logger.exception("error while stopping the engine")
        await asyncio.to_thread(self.preparer.close)
        self.log_ring.uninstall()


def build_services(settings: Settings, loop: asyncio.AbstractEventLoop) -> Services:
    log_ring = LogRing()
    log_ring.install()  # first, so that the dashboard's log shows the start-up
    hf_dirs = default_hf_cache_dirs() if settings.defaults.scan_hf_cache else []
    discovery = ModelDiscovery(settings.model_dirs(), hf_dirs)
    applied = configure_backend(settings.defaults.cudnn_attention)
    if applied:
        logger.debug("MLX backend settings: %s", applied)
    client = EngineClient(settings, loop)
    client.start()
    # MLX's memory figures come from the engine's reports: this process does not run MLX
    monitor = ResourceMonitor(
        settings.defaults,
        mlx=lambda: client.report.mlx,
        device_memory=lambda: client.report.device_memory,
        group_budget=lambda: client.report.group_budget,  # a distributed group's, all ranks'
    )
    manager = MLXModelManager(settings, discovery, client, monitor)
    activity = Activity()
    engine = Engine(manager, client, activity)
    profiles = ProfileStore(settings, manager)
    metrics = RouterMetrics()
    metrics.watch(manager, monitor, client)
    generation = GenerationService(settings, engine)
    return Services(
        settings=settings,
        discovery=discovery,
        client=client,
        monitor=monitor,
        manager=manager,
        engine=engine,
        profiles=profiles,
        preparer=GenerationPreparer(settings, profiles, monitor),
        generation=generation,
        chat=ChatRenderer(generation),
        responses=ResponsesService(generation, ResponseStore(settings.defaults.responses_store_size)),
        completions=CompletionService(settings, engine, profiles, monitor),
        embeddings=EmbeddingService(settings, engine, manager),
        metrics=metrics,
        activity=activity,
        log_ring=log_ring,
    )
