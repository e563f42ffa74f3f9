"""create_app(settings): the FastAPI application, its lifespan, middleware, routers and error handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from mlx_router import __version__
from mlx_router.api.drain import RequestGate, RequestGateMiddleware
from mlx_router.api.errors import install_error_handlers
from mlx_router.api.middleware import APIKeyMiddleware, BodyLimitMiddleware, HostCheckMiddleware
from mlx_router.api.request_log import RequestLogMiddleware
from mlx_router.api.routes import anthropic, chat, completions, dashboard, embeddings, health, models, responses, ui
from mlx_router.api.routes.metrics import APIKeyMiddlewareOpenMetrics
from mlx_router.api.routes.metrics import router as metrics_router
from mlx_router.config.ranks import GROUP_LOST_EXIT
from mlx_router.config.settings import Settings
from mlx_router.engine.resource_monitor import ResourceMonitor
from mlx_router.services import build_services

logger = logging.getLogger(__name__)
MEMORY_WATCH_SECONDS = 5.0


def create_app(settings: Settings) -> FastAPI:
    """An app serving `settings`; models load in the background of its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, asyncio.get_running_loop())
        app.state.services = services
        services.client.on_group_lost = lambda reason: _group_lost(app)
        t0 = time.perf_counter()
        await services.client.ready()
        logger.info("engine ready in %.2fs", time.perf_counter() - t0)
        memory_watch = asyncio.create_task(_watch_memory(services.monitor))
        preload = None
        if settings.defaults.model:
            preload = asyncio.create_task(_preload(services, settings.defaults.model))
        try:
            yield
        finally:
            memory_watch.cancel()
            if preload is not None:
                preload.cancel()
            await services.aclose()

    # /docs and /redoc come from routes/ui.py, with their scripts served from this server, not a CDN
    app = FastAPI(title="mlx-router", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.include_router(metrics_router)
    apis = (chat.router, completions.router, anthropic.router, responses.router, embeddings.router)
    routers = (*apis, models.router, health.router)
    for router in (*routers, dashboard.router, ui.router):
        app.include_router(router)
    if settings.server.api_keys:
        key_check = APIKeyMiddlewareOpenMetrics if settings.server.metrics_public else APIKeyMiddleware
        app.add_middleware(key_check, keys=settings.server.api_keys)
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=int(settings.server.max_body_mb * 1024**2))
    app.add_middleware(HostCheckMiddleware, allowed=settings.server.allowed_hosts)  # outermost: first to run
    # Outermost: a server shutting down refuses before any other work, and counts every request it serves.
    app.state.gate = RequestGate()
    app.add_middleware(RequestGateMiddleware, gate=app.state.gate)
    # Outermost of all: every request gets its id and its end line, also one a middleware inside refuses
    app.add_middleware(RequestLogMiddleware)
    return app


def _group_lost(app: FastAPI) -> None:
    """A distributed group that broke up cannot be mended from here: the server exits non-zero for its supervisor
    (launchd, systemd, mlx.launch) to start the whole group again; `cli` reads the status from app.state."""
    app.state.exit_code = GROUP_LOST_EXIT
    exit_soon = getattr(app.state, "exit_soon", None)
    if exit_soon is not None:
        exit_soon()


async def _preload(services: object, model_id: str) -> None:
    from mlx_router.services import Services

    assert isinstance(services, Services)
    try:
        await services.manager.ensure_loaded(model_id)
    except Exception as e:  # the server keeps running; the model shows as failed in /v1/models
        logger.error("could not preload %s: %s", model_id, e)


async def _watch_memory(monitor: ResourceMonitor, every: float = MEMORY_WATCH_SECONDS) -> None:
    """Read memory every few seconds, so that a change of pressure is logged while no request comes too."""
    while True:
        await asyncio.sleep(every)
        monitor.snapshot()
