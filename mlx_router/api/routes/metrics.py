"""GET /metrics: Prometheus' text format (observability/metrics.py). Needs the API key when keys are set,
unless `server.metrics_public`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from mlx_router.api.deps import ServicesDep
from mlx_router.api.middleware import APIKeyMiddleware, Receive, Scope, Send

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(s: ServicesDep) -> Response:
    return Response(s.metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)


class APIKeyMiddlewareOpenMetrics(APIKeyMiddleware):
    """The API key check, with /metrics left open (`server.metrics_public`: a scraper without the key)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == "/metrics":
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
