"""GET /health (liveness, no work) and GET /v1/health (models, memory, pressure, requests)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from mlx_router import __version__
from mlx_router.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/health")
async def detailed_health(s: ServicesDep, request: Request) -> dict[str, Any]:
    report = s.engine.health()
    report["status"] = "ok" if report["worker_alive"] else "degraded"
    gate = request.app.state.gate
    report["http_requests_active"] = gate.active  # every request being served, wherever it is, health aside
    if gate.closed:  # shutting down: new requests are refused
        report["status"] = "draining"
    report["version"] = __version__
    return report
