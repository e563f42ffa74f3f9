"""Everything a running server holds, built in one place from the settings (FastAPI's lifespan calls this)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from mlx_router.config.discovery import ModelDiscovery, default_hf_cache_dirs
from mlx_router.config.settings import Settings
from mlx_router.core.backend_env import configure_backend
from mlx_router.core.engine import Engine, EventRelay
from mlx_router.core.manager import MLXModelManager
from mlx_router.core.resource_monitor import ResourceMonitor
from mlx_router.core.worker import MLXWorker
from mlx_router.serving.chat import ChatService
from mlx_router.serving.chat_prepare import ChatPreparer
from mlx_router.serving.completions import CompletionService
from mlx_router.serving.profiles import ProfileStore

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """The server's shared objects, held on `app.state.services`."""

    settings: Settings
    discovery: ModelDiscovery
    worker: MLXWorker
    monitor: ResourceMonitor
    manager: MLXModelManager
    engine: Engine
    profiles: ProfileStore
    chat_preparer: ChatPreparer
    chat: ChatService
    completions: CompletionService

    async def aclose(self) -> None:
        try:
            await asyncio.wait_for(self.manager.shutdown(), timeout=30)
        except Exception:  # shutting down: log and go on
            logger.exception("error while unloading models")
        self.worker.stop()


def _grammar_processors() -> Any:
    """The factory that turns grammars into logits processors for a loaded model (llguidance)."""
    from mlx_router.core.constrained import ConstraintCompiler

    def factory(tokenizer: Any, loaded: Any) -> Any:
        compiler = ConstraintCompiler(tokenizer, vocab_size=_logits_width(loaded))
        compiler.prepare()  # build llguidance's tokenizer at load, not in the first constrained request
        return compiler.processor

    return factory


def _logits_width(loaded: Any) -> int | None:
    args = getattr(loaded.model, "args", None)
    size = getattr(args, "vocab_size", None)
    return int(size) if isinstance(size, int) else None


def build_services(settings: Settings, loop: asyncio.AbstractEventLoop) -> Services:
    hf_dirs = default_hf_cache_dirs() if settings.defaults.scan_hf_cache else []
    discovery = ModelDiscovery(settings.model_dirs(), hf_dirs)
    applied = configure_backend(settings.defaults.cudnn_attention)
    if applied:
        logger.debug("MLX backend settings: %s", applied)
    worker = MLXWorker()
    relay = EventRelay(loop)
    worker.add_iteration_hook(relay.flush)
    worker.start()
    monitor = ResourceMonitor(settings.defaults)
    manager = MLXModelManager(settings, discovery, worker, monitor, grammar_processors=_grammar_processors())
    engine = Engine(manager, worker, relay)
    profiles = ProfileStore(settings, manager)
    return Services(
        settings=settings,
        discovery=discovery,
        worker=worker,
        monitor=monitor,
        manager=manager,
        engine=engine,
        profiles=profiles,
        chat_preparer=ChatPreparer(settings, profiles, monitor),
        chat=ChatService(settings, engine),
        completions=CompletionService(settings, engine, profiles, monitor),
    )
