"""GET /v1/dashboard/activity (throughput and request counts) and GET /v1/dashboard/logs (the recent log): what
the dashboard shows beside /v1/health. Both read what the HTTP side already holds; neither waits on the engine."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from mlx_router.api.deps import ServicesDep

router = APIRouter(tags=["dashboard"])


@router.get("/v1/dashboard/activity")
async def activity(s: ServicesDep) -> dict[str, Any]:
    """Generated tokens per second (now, and each second of the last minute) and the requests since start, by
    model and by how they ended (`cancelled`: ended by the server before the engine finished: a client gone, a
    stop text, a timeout)."""
    return s.activity.snapshot()


@router.get("/v1/dashboard/logs")
async def logs(
    s: ServicesDep,
    after: Annotated[int, Query(ge=0, description="only records with a greater `seq`")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """The server's recent log records (INFO and above), oldest first; `last` is the newest `seq` to pass as
    `after` next time."""
    records = s.log_ring.records(after=after, limit=limit)
    return {"object": "list", "data": records, "last": records[-1]["seq"] if records else after}
